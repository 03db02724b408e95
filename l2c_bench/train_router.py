"""Learn an L2C router (paper Sec. 3.4) for one model, sampler and NFE.

    python -m l2c_bench.train_router                                  # toy DiT, DDIM, 20 NFE
    python -m l2c_bench.train_router model=uvit steps=50 router.lam=2e-4
    python -m l2c_bench.train_router -m router.lam=1e-5,1e-4,1e-3     # a lambda sweep
    torchrun --nproc_per_node 8 -m l2c_bench.train_router scale=paper model=dit \\
        model.checkpoint=/ckpt/DiT-XL-2-256x256.pt router.data=/data/imagenet/train

Same config tree as `l2c_bench.run` (the `router.*` group holds the recipe). The artifact goes
to `<results_dir>/_routers/<name>.pt` (official router layout + metadata) where
`cache=l2c cache.router=auto` finds it; checkpoints every `router.checkpoint_every` iterations
in `<name>.work/`, resumed automatically when the same command runs again. `force=true` retrains.
"""

from __future__ import annotations

import logging

import hydra
import torch
from omegaconf import DictConfig

from .caching.methods.l2c.learning.job import l2c_interval, learn, name_for
from .caching.methods.l2c.pairing import l2c_cycle
from .config import CONF_DIR, register_configs
from .records import flatten
from .records.tracker import make_tracker
from .runs.prepare import describe
from .sampling import check_sampler
from .system.devices import init_distributed

log = logging.getLogger("l2c_bench.train_router")
register_configs()


def train_router(cfg: DictConfig) -> str:
    run = describe(cfg)
    check_sampler(run.sampler.name, run.model.family, run.steps)
    # a wrong cache.interval or a cycle L2C does not define: an error before the model is loaded
    l2c_cycle(run.model.family, run.sampler.name, run.steps, interval=l2c_interval(run))
    device = init_distributed(run.device)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    tracker = None
    if rank == 0:
        tracker = make_tracker(run.tracker, group=run.tracker.group or "routers", name=f"router-{name_for(run)}",
                               results_dir=run.results_dir, config=flatten(dict(run.config)))
    ok = False
    try:
        path = learn(run, device=device, force=run.force, tracker=tracker)
        ok = True
    finally:
        if tracker is not None:
            tracker.finish(exit_code=0 if ok else 1)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(path)
    return str(path)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train_router(cfg)


if __name__ == "__main__":
    main()
