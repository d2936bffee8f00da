"""Decoding: GenerationConfig, logits processors, the compiled greedy/sampling and beam loops."""

from .config import GenerationConfig

__all__ = ["GenerationConfig"]
