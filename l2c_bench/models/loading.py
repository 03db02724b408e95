"""The configured diffusion model and VAE, loaded strictly (shared by the run, router learning and calibration)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..description import ModelSpec
from . import build_model, load_checkpoint

TOY_ASSETS = Path(__file__).resolve().parents[1] / "toy" / "assets"
_FINGERPRINTS: dict[tuple, str] = {}


class RunConfigError(ValueError):
    """A configuration value that cannot work; raised before any compute."""


def checkpoint_path(spec: ModelSpec):
    """model.checkpoint with `toy` resolved to the shipped asset; `random` stays `random`.
    model=diffusers: `pretrained` resolves to model.pretrained, and `toy` stays `toy` except for
    DiT (our toy DiT's asset, converted)."""
    if spec.diffusers_class:
        if spec.checkpoint == "pretrained":
            return spec.pretrained
        if spec.checkpoint == "toy" and spec.diffusers_class == "DiTTransformer2DModel":
            return TOY_ASSETS / "dit_toy.pt"
        return spec.checkpoint
    if spec.checkpoint == "toy":
        if spec.scale != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        return TOY_ASSETS / f"{spec.family}_toy.pt"
    return spec.checkpoint


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


def model_fingerprint(spec: ModelSpec) -> str | None:
    """The content hash of the weights a run loads, None for random ones: what the results store's
    shared references, learned routers and calibrations are keyed by."""
    m = spec
    if not m.diffusers_class:
        path = checkpoint_path(spec)
        return None if path == "random" else file_sha256(path)
    if m.checkpoint == "random":
        return None
    parts = {"class": m.diffusers_class, "config": dict(m.config), "zoo": dict(m.zoo), "checkpoint": m.checkpoint}
    if m.prompt_set:  # what the model is conditioned on (keyed only when set: the other keys stay valid)
        parts["prompt_set"] = prompt_set(m).sha256
    path = checkpoint_path(spec)
    if m.checkpoint == "pretrained":
        folder = Path(path)
        parts["weights"] = {str(f.relative_to(folder)): file_sha256(f) for f in sorted(folder.rglob("*"))
                            if f.suffix in (".safetensors", ".bin", ".json")}
    elif path != "toy":  # our toy DiT's asset, converted
        parts["weights"] = file_sha256(path)
    else:
        parts["weights"] = "seeded toy weights"  # seed 0 (build_configured)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_configured(spec: ModelSpec, device=None):
    """The configured architecture with fresh (or, on `meta`, no) weights: a registered name, or
    model=diffusers's class in its toy configuration (seeded: the same weights every time)."""
    if not spec.diffusers_class:
        return build_model(spec.arch, device=device, **spec.overrides)
    from .zoo import TOY_CONFIGS, ZooConfigError, build, pretrained_config, zoo_args

    try:
        if spec.checkpoint == "pretrained":  # the folder's own configuration (no weights read)
            config = pretrained_config(spec.pretrained)
        elif spec.config:  # keys over the class's toy configuration (an unknown class: zoo_args says so)
            config = {**TOY_CONFIGS.get(spec.diffusers_class, {}), **spec.config}
        else:
            config = None
        args = zoo_args(spec.diffusers_class, config, **_zoo_settings(spec))
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


def prompt_set(spec: ModelSpec):
    """The prompt set model.prompt_set names (models/zoo/prompt_sets.py), read, on a model that
    takes prompts; otherwise a RunConfigError naming the key (runs/prepare.py checks it before
    any compute)."""
    from .zoo.prompt_sets import PromptSetError, read_prompt_set

    if not spec.diffusers_class:
        raise RunConfigError("model.prompt_set conditions a text-to-image model=diffusers class; "
                             f"{spec.arch} is class-conditioned")
    if spec.diffusers_class == "DiTTransformer2DModel":
        raise RunConfigError("model.prompt_set: DiTTransformer2DModel is class-conditioned; prompt sets are "
                             "for the text-to-image classes")
    try:
        return read_prompt_set(spec.prompt_set)
    except PromptSetError as exc:
        raise RunConfigError(str(exc)) from None


def _zoo_settings(spec: ModelSpec, prompt_tokens: int | None = None) -> dict:
    """model.zoo, with a prompt set's size as the bank's (and its encodings' length when known)."""
    settings = dict(spec.zoo)
    if spec.prompt_set:
        settings["prompts"] = len(prompt_set(spec))
        if prompt_tokens is not None:
            settings["prompt_tokens"] = prompt_tokens
    return settings


def _load_diffusers(spec: ModelSpec, device: torch.device | str = "cpu"):
    """model=diffusers: the toy model (DiT: our toy DiT converted), or a local pretrained folder."""
    from .zoo import build_zoo, from_ours

    prompts = prompt_set(spec) if spec.prompt_set else None
    if spec.checkpoint == "pretrained":
        from .zoo import ZooConfigError, adapter_for
        from .zoo.text import TextEncoderMissing, encode_prompts

        try:  # a missing model.pretrained or config.json: ZooConfigError names the key
            bank = None
            if prompts is not None:  # the folder's text encoders, on the run's device
                bank = encode_prompts(adapter_for(spec.diffusers_class), spec.pretrained, prompts.texts,
                                      int(spec.zoo.get("text_tokens", 0)), device)
            model = build_zoo(spec.diffusers_class, pretrained=spec.pretrained,
                              **_zoo_settings(spec, None if bank is None else bank.embeddings.shape[1]))
        except (ZooConfigError, TextEncoderMissing) as exc:
            raise RunConfigError(str(exc)) from None
        if prompts is not None:
            model.use_prompts(prompts, bank)
        return model
    if spec.checkpoint not in ("toy", "random"):
        raise RunConfigError(f"model.checkpoint={spec.checkpoint!r}: model=diffusers takes toy, random or "
                             "pretrained (with model.pretrained)")
    path = checkpoint_path(spec)
    if path not in ("toy", "random"):  # our toy DiT's asset, for DiTTransformer2DModel
        if spec.scale != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        if spec.config:
            raise RunConfigError("model.config changes the toy DiT's architecture; its converted weights need "
                                 "the toy configuration (use model.checkpoint=random for another one)")
        ours = load_checkpoint(build_model("DiT-toy", device="meta"), path)
        return from_ours(ours, official=bool(spec.zoo.get("official", False)))  # its one setting for DiT
    model = build_configured(spec)
    if prompts is not None:  # toy and random weights: the texts over the seeded bank
        model.use_prompts(prompts)
    return model


def pipeline_vae_folder(spec: ModelSpec) -> Path:
    """model.vae=pretrained: the AutoencoderKL folder, model.vae_checkpoint else <model.pretrained>/vae,
    or a RunConfigError naming both keys (runs/prepare.py checks it before any compute)."""
    folder = spec.vae_checkpoint or (spec.pretrained and Path(spec.pretrained) / "vae")
    if not folder:
        raise RunConfigError("model.vae=pretrained needs model.vae_checkpoint (a diffusers AutoencoderKL folder) "
                             "or model.pretrained (a diffusers folder with its vae/)")
    if not (Path(folder) / "config.json").is_file():
        raise RunConfigError(f"model.vae=pretrained: no VAE at {str(folder)!r}; it reads model.vae_checkpoint (a "
                             "diffusers AutoencoderKL folder) or else the vae/ folder of model.pretrained")
    return Path(folder)


def _pipeline_vae(spec: ModelSpec):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(pipeline_vae_folder(spec), local_files_only=True)


def load_model(spec: ModelSpec, device: torch.device):
    """The diffusion model (and VAE, or None) as described; checkpoints load strictly."""
    if spec.diffusers_class:
        vae = _pipeline_vae(spec) if spec.vae == "pretrained" else None
        model = _load_diffusers(spec, device).to(device).eval().requires_grad_(False)
        return model, None if vae is None else vae.to(device).eval().requires_grad_(False)
    checkpoint = checkpoint_path(spec)
    if checkpoint == "random":
        model = build_model(spec.arch, **spec.overrides)
    else:  # built weightless, then given the file's tensors: no wasted init of a large model
        model = build_model(spec.arch, device="meta", **spec.overrides)
        load_checkpoint(model, checkpoint, config_key="model.checkpoint")
    vae = None
    if spec.vae == "sd":
        from .vae import build_vae, load_vae

        if checkpoint == "random" or spec.vae_checkpoint == "random":
            vae = build_vae()  # speed studies: weights do not matter
        else:
            vae = load_vae(spec.vae_checkpoint, config_key="model.vae_checkpoint")
        vae = vae.to(device)
    return model.to(device).eval().requires_grad_(False), vae
