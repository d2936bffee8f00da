"""minigen: XLA-compiled text generation over a pure-TensorFlow GPT-2."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines; set it yourself to see them

from .config import ConfigError, GPT2Config  # noqa: E402
from .tokenizer import Tokenizer, TokenizerError  # noqa: E402
from .weights import LoadError, load  # noqa: E402

__all__ = ["GPT2", "GPT2Config", "ConfigError", "LoadError", "Tokenizer", "TokenizerError", "load"]
__version__ = "0.1.0"


def __getattr__(name):
    # GPT2 imports TensorFlow; loading it on first use keeps `import minigen` (and the CLI's
    # argument parsing) fast, and lets the CLI import TensorFlow with its C++ start-up noise muted.
    if name == "GPT2":
        from .gpt2 import GPT2

        return GPT2
    raise AttributeError(f"module 'minigen' has no attribute {name!r}")
