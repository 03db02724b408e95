"""The configured diffusion model and VAE, loaded strictly (shared by the run, router learning and calibration)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from . import build_model, load_checkpoint

TOY_ASSETS = Path(__file__).resolve().parents[1] / "toy" / "assets"
_FINGERPRINTS: dict[tuple, str] = {}


class RunConfigError(ValueError):
    """A configuration value that cannot work; raised before any compute."""


def checkpoint_path(cfg: DictConfig):
    """model.checkpoint with `toy` resolved to the shipped asset; `random` stays `random`.
    model=diffusers: `pretrained` resolves to model.pretrained, and `toy` stays `toy` except for
    DiT (our toy DiT's asset, converted)."""
    if cfg.model.diffusers_class:
        if cfg.model.checkpoint == "pretrained":
            return cfg.model.pretrained
        if cfg.model.checkpoint == "toy" and cfg.model.diffusers_class == "DiTTransformer2DModel":
            return TOY_ASSETS / "dit_toy.pt"
        return cfg.model.checkpoint
    if cfg.model.checkpoint == "toy":
        if cfg.scale.name != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        return TOY_ASSETS / f"{cfg.model.family}_toy.pt"
    return cfg.model.checkpoint


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash of a checkpoint (memoised per path, size and mtime: a paper-scale file is GBs)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
        _FINGERPRINTS[memo] = digest.hexdigest()
    return _FINGERPRINTS[memo]


def model_fingerprint(cfg: DictConfig) -> str | None:
    """The content hash of the weights a run loads, None for random ones: what the results store's
    shared references, learned routers and calibrations are keyed by."""
    m = cfg.model
    if not m.diffusers_class:
        path = checkpoint_path(cfg)
        return None if path == "random" else file_sha256(path)
    if m.checkpoint == "random":
        return None
    from omegaconf import OmegaConf

    parts = {"class": m.diffusers_class, "config": OmegaConf.to_container(m.config),
             "zoo": OmegaConf.to_container(m.zoo), "checkpoint": m.checkpoint}
    if m.get("prompt_set"):  # what the model is conditioned on (absent before prompt sets: keys unchanged)
        parts["prompt_set"] = prompt_set(m).sha256
    path = checkpoint_path(cfg)
    if m.checkpoint == "pretrained":
        folder = Path(path)
        parts["weights"] = {str(f.relative_to(folder)): file_sha256(f) for f in sorted(folder.rglob("*"))
                            if f.suffix in (".safetensors", ".bin", ".json")}
    elif path != "toy":  # our toy DiT's asset, converted
        parts["weights"] = file_sha256(path)
    else:
        parts["weights"] = "seeded toy weights"  # seed 0 (build_configured)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_configured(model_cfg: DictConfig, device=None):
    """The configured architecture with fresh (or, on `meta`, no) weights: a registered name, or
    model=diffusers's class in its toy configuration (seeded: the same weights every time)."""
    if not model_cfg.diffusers_class:
        return build_model(model_cfg.arch, device=device, **model_cfg.overrides)
    from .zoo import TOY_CONFIGS, ZooConfigError, build, pretrained_config, zoo_args

    try:
        if model_cfg.checkpoint == "pretrained":  # the folder's own configuration (no weights read)
            config = pretrained_config(model_cfg.pretrained)
        elif model_cfg.config:  # keys over the class's toy configuration (an unknown class: zoo_args says so)
            config = {**TOY_CONFIGS.get(model_cfg.diffusers_class, {}), **model_cfg.config}
        else:
            config = None
        args = zoo_args(model_cfg.diffusers_class, config, **_zoo_settings(model_cfg))
    except TypeError as exc:
        raise RunConfigError(f"model.zoo: {exc}; valid keys: the fields of models.zoo.ZooArgs") from None
    except ZooConfigError as exc:
        raise RunConfigError(str(exc)) from None
    if str(device) == "meta":  # planning copies: one per description (a sweep validates many points)
        if args not in _META_ZOO:
            _META_ZOO[args] = build(args, "meta")
        return _META_ZOO[args]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # toy weights are seeded: every run builds the same model
        return build(args, device)


_META_ZOO: dict = {}  # ZooArgs -> a weightless wrapped model, only ever planned on


def prompt_set(model_cfg: DictConfig):
    """The prompt set model.prompt_set names (models/zoo/prompt_sets.py), read, on a model that
    takes prompts; otherwise a RunConfigError naming the key (runs/prepare.py checks it before
    any compute)."""
    from .zoo.prompt_sets import PromptSetError, read_prompt_set

    if not model_cfg.diffusers_class:
        raise RunConfigError("model.prompt_set conditions a text-to-image model=diffusers class; "
                             f"{model_cfg.arch} is class-conditioned")
    if model_cfg.diffusers_class == "DiTTransformer2DModel":
        raise RunConfigError("model.prompt_set: DiTTransformer2DModel is class-conditioned; prompt sets are "
                             "for the text-to-image classes")
    try:
        return read_prompt_set(model_cfg.prompt_set)
    except PromptSetError as exc:
        raise RunConfigError(str(exc)) from None


def _zoo_settings(model_cfg: DictConfig, prompt_tokens: int | None = None) -> dict:
    """model.zoo, with a prompt set's size as the bank's (and its encodings' length when known)."""
    settings = dict(model_cfg.zoo)
    if model_cfg.get("prompt_set"):
        settings["prompts"] = len(prompt_set(model_cfg))
        if prompt_tokens is not None:
            settings["prompt_tokens"] = prompt_tokens
    return settings


def _load_diffusers(cfg: DictConfig, device: torch.device | str = "cpu"):
    """model=diffusers: the toy model (DiT: our toy DiT converted), or a local pretrained folder."""
    from .zoo import build_zoo, from_ours

    model_cfg = cfg.model
    prompts = prompt_set(model_cfg) if model_cfg.get("prompt_set") else None
    if model_cfg.checkpoint == "pretrained":
        from .zoo import ZooConfigError, adapter_for
        from .zoo.text import TextEncoderMissing, encode_prompts

        try:  # a missing model.pretrained or config.json: ZooConfigError names the key
            bank = None
            if prompts is not None:  # the folder's text encoders, on the run's device
                bank = encode_prompts(adapter_for(model_cfg.diffusers_class), model_cfg.pretrained, prompts.texts,
                                      int(model_cfg.zoo.get("text_tokens", 0)), device)
            model = build_zoo(model_cfg.diffusers_class, pretrained=model_cfg.pretrained,
                              **_zoo_settings(model_cfg, None if bank is None else bank.embeddings.shape[1]))
        except (ZooConfigError, TextEncoderMissing) as exc:
            raise RunConfigError(str(exc)) from None
        if prompts is not None:
            model.use_prompts(prompts, bank)
        return model
    if model_cfg.checkpoint not in ("toy", "random"):
        raise RunConfigError(f"model.checkpoint={model_cfg.checkpoint!r}: model=diffusers takes toy, random or "
                             "pretrained (with model.pretrained)")
    path = checkpoint_path(cfg)
    if path not in ("toy", "random"):  # our toy DiT's asset, for DiTTransformer2DModel
        if cfg.scale.name != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        if model_cfg.config:
            raise RunConfigError("model.config changes the toy DiT's architecture; its converted weights need "
                                 "the toy configuration (use model.checkpoint=random for another one)")
        ours = load_checkpoint(build_model("DiT-toy", device="meta"), path)
        return from_ours(ours, official=bool(model_cfg.zoo.get("official", False)))  # its one setting for DiT
    model = build_configured(model_cfg)
    if prompts is not None:  # toy and random weights: the texts over the seeded bank
        model.use_prompts(prompts)
    return model


def pipeline_vae_folder(cfg: DictConfig) -> Path:
    """model.vae=pretrained: the AutoencoderKL folder, model.vae_checkpoint else <model.pretrained>/vae,
    or a RunConfigError naming both keys (runs/prepare.py checks it before any compute)."""
    folder = cfg.model.vae_checkpoint or (cfg.model.pretrained and Path(cfg.model.pretrained) / "vae")
    if not folder:
        raise RunConfigError("model.vae=pretrained needs model.vae_checkpoint (a diffusers AutoencoderKL folder) "
                             "or model.pretrained (a diffusers folder with its vae/)")
    if not (Path(folder) / "config.json").is_file():
        raise RunConfigError(f"model.vae=pretrained: no VAE at {str(folder)!r}; it reads model.vae_checkpoint (a "
                             "diffusers AutoencoderKL folder) or else the vae/ folder of model.pretrained")
    return Path(folder)


def _pipeline_vae(cfg: DictConfig):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(pipeline_vae_folder(cfg), local_files_only=True)


def load_model(cfg: DictConfig, device: torch.device):
    """The diffusion model (and VAE, or None) as configured; checkpoints load strictly."""
    if cfg.model.diffusers_class:
        vae = _pipeline_vae(cfg) if cfg.model.vae == "pretrained" else None
        model = _load_diffusers(cfg, device).to(device).eval().requires_grad_(False)
        return model, None if vae is None else vae.to(device).eval().requires_grad_(False)
    checkpoint = checkpoint_path(cfg)
    if checkpoint == "random":
        model = build_model(cfg.model.arch, **cfg.model.overrides)
    else:  # built weightless, then given the file's tensors: no wasted init of a large model
        model = build_model(cfg.model.arch, device="meta", **cfg.model.overrides)
        load_checkpoint(model, checkpoint, config_key="model.checkpoint")
    vae = None
    if cfg.model.vae == "sd":
        from .vae import build_vae, load_vae

        if checkpoint == "random" or cfg.model.vae_checkpoint == "random":
            vae = build_vae()  # speed studies: weights do not matter
        else:
            vae = load_vae(cfg.model.vae_checkpoint, config_key="model.vae_checkpoint")
        vae = vae.to(device)
    return model.to(device).eval().requires_grad_(False), vae
