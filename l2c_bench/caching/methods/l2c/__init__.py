"""Learning-to-Cache at inference: the method and its plan (`method`), which evaluations are
cache steps for each family and sampler (`pairing`), and the router file format (`router`).
Learning a router: `l2c_bench.router_learning` (`python -m l2c_bench.train_router`)."""

from .method import L2C, PAPER_THRESHOLDS, l2c_plan, resolve_router
from .router import load_router, save_router

__all__ = ["L2C", "PAPER_THRESHOLDS", "l2c_plan", "load_router", "resolve_router", "save_router"]
