"""minigen: XLA-compiled text generation over a pure-TensorFlow GPT-2."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines; set it yourself to see them

from .config import ConfigError, GPT2Config
from .model import GPT2
from .weights import LoadError, load

__all__ = ["GPT2", "GPT2Config", "ConfigError", "LoadError", "load"]
__version__ = "0.1.0"
