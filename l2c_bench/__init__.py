"""l2c-bench: a benchmark harness for layer caching in diffusion transformers."""

from .pipeline import GenerationResult, generate

__all__ = ["GenerationResult", "generate"]
