"""Learning-to-Cache: the method and its plan (`method`), which evaluations are cache steps for
each family and sampler (`pairing`), the router file format (`router`), and learning a router
(`learning`; `python -m l2c_bench.train_router`)."""

from .method import L2C, PAPER_THRESHOLDS, l2c_plan, resolve_router
from .router import load_router, save_router

__all__ = ["L2C", "PAPER_THRESHOLDS", "l2c_plan", "load_router", "resolve_router", "save_router"]
