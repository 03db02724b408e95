"""l2c-bench: a benchmark harness for layer caching in diffusion transformers."""

from .pipeline import GenerationResult, generate
from .sampling.graphs import SamplingGraphs

__all__ = ["GenerationResult", "SamplingGraphs", "generate"]
