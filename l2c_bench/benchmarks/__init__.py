"""Speed benchmarks: `speed` (one model, uncached vs a method, interleaved), `gpu_suite` (the
paper-scale set on a GPU) and `router_learning` (the cost of an L2C router-learning iteration)."""
