"""Router learning as a job on a run's description: name, look up, train, store.

Shared by `python -m l2c_bench.train_router` and by `cache=l2c cache.router=auto` in a run (L2C.check_run / prepare).
"""

from __future__ import annotations

import logging
import platform
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .....description import ModelSpec, RouterSpec, RunDescription
from .....description.commands import command, group_overrides, run_overrides
from .....models.loading import RunConfigError, checkpoint_path, load_model, model_fingerprint
from .....system.files import exclusive
from .data import make_data
from .pairs import make_pairs
from .store import find_router, router_name, save_artifact, store_path
from .trainer import Recipe, train

log = logging.getLogger("l2c_bench.train_router")


def recipe_from(router: RouterSpec) -> Recipe:
    """The learning recipe of the run's `router` group, checked."""
    r = router
    recipe = Recipe(lam=float(r.lam), lr=float(r.lr), iterations=int(r.iterations), batch_size=int(r.batch_size),
                    loss=str(r.loss), clamp=None if r.clamp is None else float(r.clamp),
                    label_dropout=float(r.label_dropout), init_std=float(r.init_std), seed=int(r.seed))
    recipe.check()
    return recipe


def model_sha256(model: ModelSpec) -> str:
    path = checkpoint_path(model)
    if path == "random":
        raise RunConfigError("cache.router=auto needs trained weights: a router learned on model.checkpoint=random "
                             "means nothing (use cache.router=official or a router file for speed studies)")
    if path != "toy" and not Path(path).exists():
        raise FileNotFoundError(f"model checkpoint not found: {path} (set by config key `model.checkpoint`)")
    return model_fingerprint(model)


def l2c_interval(run: RunDescription) -> int:
    """The L2C cycle the router is for: `cache.interval` when cache=l2c, else the paper's 2."""
    return int(run.cache.interval) if run.cache is not None and run.cache.name == "l2c" else 2


def name_for(run: RunDescription) -> str:
    return router_name(arch=run.model.arch, sampler=run.sampler.name, nfe=run.steps, recipe=recipe_from(run.router),
                       model_sha256=model_sha256(run.model), data=run.router.data, interval=l2c_interval(run))


def training_command(run: RunDescription) -> str:
    """The command that trains the router `cache.router=auto` looks for (commands.py: it composes
    back to this run's model, sampler, NFE, recipe and store)."""
    # unset at paper scale: the user's ImageNet folder goes here
    router = replace(run.router, data=run.router.data or "/path/to/imagenet/train")
    args = run_overrides(run) + group_overrides("router", router)
    if l2c_interval(run) != 2:
        args.append(f"cache.interval={l2c_interval(run)}")
    return command("l2c_bench.train_router", args)


def resolve_auto(run: RunDescription) -> Path | None:
    """The stored router for this run, None if it will be trained here (toy scale or
    cache.train_if_missing), else an error that prints the training command."""
    path = find_router(run.results_dir, name_for(run))
    if path is not None or run.scale.name == "toy" or run.cache.train_if_missing:
        return path
    raise RunConfigError(
        f"cache.router=auto: no learned router for {run.model.arch} + {run.sampler.name} at {run.steps} NFE with "
        f"this recipe (router.*) in {store_path(run.results_dir, '').parent}. Train it with\n"
        f"  {training_command(run)}\n"
        f"or set cache.train_if_missing=true, or use cache.router=official (the L2C release: DiT-XL/2 DDIM 20/50, "
        f"U-ViT-H/2 DPM-Solver-2 20/50) or cache.router=<file>."
    )


def learn(run: RunDescription, *, device: torch.device, model=None, vae=None, progress: bool = True,
          force: bool = False, tracker=None) -> Path:
    """Train (or resume) the router for this config and store it; returns the artifact path.

    An existing artifact (in the results store or shipped) is returned as is unless `force`.
    """
    name = name_for(run)
    target = store_path(run.results_dir, name)
    existing = find_router(run.results_dir, name)
    if existing is not None and not force:
        return existing
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    # one trainer per router: a concurrent job (a sweep's other points) waits, then finds it
    with nullcontext() if distributed else exclusive(target.with_suffix(".lock")):
        existing = find_router(run.results_dir, name)
        if existing is not None and not force:
            log.info("router exists: %s (force=true retrains)", existing)
            return existing
        return _learn(run, name, target, device=device, model=model, vae=vae, progress=progress,
                      force=force, tracker=tracker)


def _learn(run: RunDescription, name, target, *, device, model, vae, progress, force, tracker) -> Path:
    from .....system.provenance import collect, now

    recipe = recipe_from(run.router)
    if model is None:
        model, vae = load_model(run.model, device)
    pairs = make_pairs(run.model.family, run.sampler.name, run.steps, device, l2c_interval(run),
                       getattr(model, "flow_shift", 3.0))
    data = make_data(run.router.data, seed=recipe.seed, model=model, vae=vae, num_workers=run.router.num_workers)
    work = target.with_suffix(".work")
    if force and (work / "checkpoint.pt").is_file():
        (work / "checkpoint.pt").unlink()
    log.info("training router %s (%d iterations, batch %d, lam %g, lr %g)", name, recipe.iterations,
             recipe.batch_size, recipe.lam, recipe.lr)
    curve: list[dict] = []

    def on_log(step, means):
        curve.append({"step": step, **means})
        if tracker is not None:
            tracker.log({f"router/{k}": v for k, v in means.items()} | {"router/step": step})

    state = train(model, pairs, data, recipe, nfe=run.steps, work_dir=work,
                  checkpoint_every=int(run.router.checkpoint_every), log_every=int(run.router.log_every),
                  progress=progress, on_log=on_log)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        metadata = {
            "name": name, "family": run.model.family, "arch": run.model.arch, "sampler": run.sampler.name,
            "nfe": run.steps, "interval": l2c_interval(run), "recipe": asdict(recipe), "data": run.router.data,
            "model_checkpoint": str(checkpoint_path(run.model)), "model_sha256": model_sha256(run.model),
            "cache_rows": [row for _, row in pairs.pairs], "iterations_done": state.step,
            "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
            "resumed_from": state.resumed_from, "train_seconds": state.seconds,
            "seconds_per_iteration": state.seconds / max(1, state.step),
            "loss_curve": curve, "history": state.history, "created": now(), "host": platform.node(),
            "provenance": collect(device),
        }
        save_artifact(target, state.logits, metadata)
        _remove_checkpoint(work)
        log.info("router saved: %s", target)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # other ranks return the path only once it exists
    return target


def _remove_checkpoint(work: Path) -> None:
    for file in work.glob("*"):
        file.unlink()
    work.rmdir()


__all__ = ["learn", "name_for", "recipe_from", "resolve_auto", "training_command"]
