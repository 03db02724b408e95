"""Router learning as a job on the Hydra config: name, look up, train, store.

Shared by `python -m l2c_bench.train_router` and by `cache=l2c cache.router=auto` in a run (L2C.check_run / prepare).
"""

from __future__ import annotations

import logging
import platform
import shlex
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig

from .....models.loading import RunConfigError, checkpoint_path, load_model, model_fingerprint
from .....system.files import exclusive
from .data import make_data
from .pairs import make_pairs
from .store import find_router, router_name, save_artifact, store_path
from .trainer import Recipe, train

log = logging.getLogger("l2c_bench.train_router")


def recipe_from(cfg: DictConfig) -> Recipe:
    r = cfg.router
    recipe = Recipe(lam=float(r.lam), lr=float(r.lr), iterations=int(r.iterations), batch_size=int(r.batch_size),
                    loss=str(r.loss), clamp=None if r.clamp is None else float(r.clamp),
                    label_dropout=float(r.label_dropout), init_std=float(r.init_std), seed=int(r.seed))
    recipe.check()
    return recipe


def model_sha256(cfg: DictConfig) -> str:
    path = checkpoint_path(cfg)
    if path == "random":
        raise RunConfigError("cache.router=auto needs trained weights: a router learned on model.checkpoint=random "
                             "means nothing (use cache.router=official or a router file for speed studies)")
    if path != "toy" and not Path(path).exists():
        raise FileNotFoundError(f"model checkpoint not found: {path} (set by config key `model.checkpoint`)")
    return model_fingerprint(cfg)


def l2c_interval(cfg: DictConfig) -> int:
    """The L2C cycle the router is for: `cache.interval` when cache=l2c, else the paper's 2."""
    return int(cfg.cache.get("interval", 2)) if cfg.cache.name == "l2c" else 2


def name_for(cfg: DictConfig, sampler: str) -> str:
    return router_name(arch=cfg.model.arch, sampler=sampler, nfe=int(cfg.steps), recipe=recipe_from(cfg),
                       model_sha256=model_sha256(cfg), data=cfg.router.data, interval=l2c_interval(cfg))


def training_command(cfg: DictConfig, sampler: str) -> str:
    """The exact command that trains the router `cache.router=auto` looks for."""
    r = cfg.router
    data = r.data or "/path/to/imagenet/train"  # unset at paper scale: the user's ImageNet folder goes here
    args = [f"scale={cfg.scale.name}", f"model={cfg.model.family}", f"model.checkpoint={cfg.model.checkpoint}",
            f"sampler.name={sampler}", f"steps={cfg.steps}", f"router.data={data}", f"results_dir={cfg.results_dir}"]
    if cfg.model.vae == "sd":  # image folders are encoded on the fly
        args.insert(3, f"model.vae_checkpoint={cfg.model.vae_checkpoint}")
    if cfg.model.diffusers_class:
        args[1] = "model=diffusers"
        args[2:2] = ([f"model.diffusers_class={cfg.model.diffusers_class}"]
                     + [f"+model.{group}.{k}={v}" for group in ("config", "zoo") for k, v in cfg.model[group].items()]
                     + ([f"model.pretrained={cfg.model.pretrained}"] if cfg.model.pretrained else []))
    else:
        args[2:2] = [f"model.arch={cfg.model.arch}"] + [f"+model.overrides.{k}={v}" for k, v in cfg.model.overrides.items()]
    if l2c_interval(cfg) != 2:
        args.append(f"cache.interval={l2c_interval(cfg)}")
    args += [f"router.{k}={'null' if v is None else v}" for k, v in asdict(recipe_from(cfg)).items()]
    return "python -m l2c_bench.train_router " + " ".join(shlex.quote(a) for a in args)


def resolve_auto(cfg: DictConfig, sampler: str) -> Path | None:
    """The stored router for this run, None if it will be trained here (toy scale or
    cache.train_if_missing), else an error that prints the training command."""
    path = find_router(cfg.results_dir, name_for(cfg, sampler))
    if path is not None or cfg.scale.name == "toy" or cfg.cache.train_if_missing:
        return path
    raise RunConfigError(
        f"cache.router=auto: no learned router for {cfg.model.arch} + {sampler} at {cfg.steps} NFE with this recipe "
        f"(router.*) in {store_path(cfg.results_dir, '').parent}. Train it with\n  {training_command(cfg, sampler)}\n"
        f"or set cache.train_if_missing=true, or use cache.router=official (the L2C release: DiT-XL/2 DDIM 20/50, "
        f"U-ViT-H/2 DPM-Solver-2 20/50) or cache.router=<file>."
    )


def learn(cfg: DictConfig, sampler: str, *, device: torch.device, model=None, vae=None, progress: bool = True,
          force: bool = False, tracker=None) -> Path:
    """Train (or resume) the router for this config and store it; returns the artifact path.

    An existing artifact (in the results store or shipped) is returned as is unless `force`.
    """
    name = name_for(cfg, sampler)
    target = store_path(cfg.results_dir, name)
    existing = find_router(cfg.results_dir, name)
    if existing is not None and not force:
        return existing
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    # one trainer per router: a concurrent job (a sweep's other points) waits, then finds it
    with nullcontext() if distributed else exclusive(target.with_suffix(".lock")):
        existing = find_router(cfg.results_dir, name)
        if existing is not None and not force:
            log.info("router exists: %s (force=true retrains)", existing)
            return existing
        return _learn(cfg, sampler, name, target, device=device, model=model, vae=vae, progress=progress,
                      force=force, tracker=tracker)


def _learn(cfg, sampler, name, target, *, device, model, vae, progress, force, tracker) -> Path:
    from .....system.provenance import collect, now

    recipe = recipe_from(cfg)
    if model is None:
        model, vae = load_model(cfg, device)
    pairs = make_pairs(cfg.model.family, sampler, int(cfg.steps), device, l2c_interval(cfg),
                       getattr(model, "flow_shift", 3.0))
    data = make_data(cfg.router.data, seed=recipe.seed, model=model, vae=vae, num_workers=cfg.router.num_workers)
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

    state = train(model, pairs, data, recipe, nfe=int(cfg.steps), work_dir=work,
                  checkpoint_every=int(cfg.router.checkpoint_every), log_every=int(cfg.router.log_every),
                  progress=progress, on_log=on_log)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        metadata = {
            "name": name, "family": cfg.model.family, "arch": cfg.model.arch, "sampler": sampler,
            "nfe": int(cfg.steps), "interval": l2c_interval(cfg), "recipe": asdict(recipe), "data": cfg.router.data,
            "model_checkpoint": str(checkpoint_path(cfg)), "model_sha256": model_sha256(cfg),
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
