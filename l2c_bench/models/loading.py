"""The described diffusion model and VAE, loaded strictly (shared by the run, router learning and
calibration).

Two kinds of model, each with its own loader, picked once from the description: an architecture of
our registry (`models.MODEL_SPECS`: DiT, U-ViT; one checkpoint file, the SD VAE) and a diffusers
class (`model=diffusers`: a toy configuration with seeded weights, or a local pretrained folder with
its own VAE and text encoders). The module's functions ask the description's loader.
"""

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


class Registered:
    """An architecture of `models.MODEL_SPECS` (model=dit, model=uvit): one checkpoint file."""

    @staticmethod
    def checkpoint_path(spec: ModelSpec):
        """model.checkpoint with `toy` resolved to the shipped asset; `random` stays `random`."""
        if spec.checkpoint == "toy":
            if spec.scale != "toy":
                raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
            return TOY_ASSETS / f"{spec.family}_toy.pt"
        return spec.checkpoint

    @classmethod
    def fingerprint(cls, spec: ModelSpec) -> str | None:
        path = cls.checkpoint_path(spec)
        return None if path == "random" else file_sha256(path)

    @staticmethod
    def build(spec: ModelSpec, device=None):
        return build_model(spec.arch, device=device, **spec.overrides)

    @staticmethod
    def prompt_set(spec: ModelSpec):
        raise RunConfigError("model.prompt_set conditions a text-to-image model=diffusers class; "
                             f"{spec.arch} is class-conditioned")

    @classmethod
    def load(cls, spec: ModelSpec, device: torch.device):
        checkpoint = cls.checkpoint_path(spec)
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


class Diffusers:
    """A diffusers transformer class (model=diffusers, models/zoo): its toy configuration with seeded
    weights, our toy DiT converted (DiT's toy checkpoint), or a local from_pretrained folder."""

    CONVERTED_TOY = {"DiTTransformer2DModel": "dit_toy.pt"}  # class -> our toy asset it converts
    _meta: dict = {}  # ZooArgs -> a weightless wrapped model, only ever planned on

    @classmethod
    def checkpoint_path(cls, spec: ModelSpec):
        """`pretrained` resolves to model.pretrained; `toy` stays `toy` except for a class whose toy
        weights are our toy asset, converted."""
        if spec.checkpoint == "pretrained":
            return spec.pretrained
        if spec.checkpoint == "toy" and spec.diffusers_class in cls.CONVERTED_TOY:
            return TOY_ASSETS / cls.CONVERTED_TOY[spec.diffusers_class]
        if cls.trained_toy(spec):
            from .zoo.toy_weights import asset_path

            return asset_path(spec.diffusers_class)
        return spec.checkpoint

    @staticmethod
    def trained_toy(spec: ModelSpec) -> bool:
        """checkpoint=toy of a text-to-image class with shipped trained weights (zoo/toy_weights.py):
        their own pixel-space configuration and 10-class prompt bank, not TOY_CONFIGS' seeded ones."""
        from .zoo.toy_weights import SHIPPED

        if spec.checkpoint != "toy" or spec.diffusers_class not in SHIPPED:
            return False
        if spec.scale != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        if spec.config or spec.prompt_set:
            raise RunConfigError(f"{spec.diffusers_class}'s trained toy weights fix its configuration and its 10 "
                                 "class prompts: model.config and model.prompt_set need model.checkpoint=random")
        return True

    @classmethod
    def fingerprint(cls, spec: ModelSpec) -> str | None:
        if spec.checkpoint == "random":
            return None
        parts = {"class": spec.diffusers_class, "config": dict(spec.config), "zoo": dict(spec.zoo),
                 "checkpoint": spec.checkpoint}
        if spec.prompt_set:  # what the model is conditioned on (keyed only when set: the other keys stay valid)
            parts["prompt_set"] = cls.prompt_set(spec).sha256
        path = cls.checkpoint_path(spec)
        if spec.checkpoint == "pretrained":
            folder = Path(path)
            parts["weights"] = {str(f.relative_to(folder)): file_sha256(f) for f in sorted(folder.rglob("*"))
                                if f.suffix in (".safetensors", ".bin", ".json")}
        elif path != "toy":  # our toy asset, converted, or a class's trained toy weights
            parts["weights"] = file_sha256(path)
        else:
            parts["weights"] = "seeded toy weights"  # seed 0 (build)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    @classmethod
    def build(cls, spec: ModelSpec, device=None):
        """The class with fresh (or, on `meta`, no) weights, seeded: the same weights every time."""
        from .zoo import TOY_CONFIGS, ZooConfigError, build, pretrained_config, zoo_args

        try:
            if spec.checkpoint == "pretrained":  # the folder's own configuration (no weights read)
                config = pretrained_config(spec.pretrained)
            elif spec.config:  # keys over the class's toy configuration (an unknown class: zoo_args says so)
                config = {**TOY_CONFIGS.get(spec.diffusers_class, {}), **spec.config}
            else:
                config = None
            settings = cls._settings(spec)
            if cls.trained_toy(spec):
                from .zoo.toy_weights import TRAINED_CONFIGS, trained_args

                config = TRAINED_CONFIGS[spec.diffusers_class]
                settings = {**trained_args(spec.diffusers_class), **settings}
            args = zoo_args(spec.diffusers_class, config, **settings)
        except TypeError as exc:
            raise RunConfigError(f"model.zoo: {exc}; valid keys: the fields of models.zoo.ZooArgs") from None
        except ZooConfigError as exc:
            raise RunConfigError(str(exc)) from None
        if str(device) == "meta":  # planning copies: one per description (a sweep validates many points)
            if args not in cls._meta:
                cls._meta[args] = build(args, "meta")
            return cls._meta[args]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # toy weights are seeded: every run builds the same model
            return build(args, device)

    @staticmethod
    def prompt_set(spec: ModelSpec):
        """The prompt set model.prompt_set names (models/zoo/prompt_sets.py), read, for a class
        that takes text (its adapter has text components)."""
        from .zoo import ZooConfigError, adapter_for
        from .zoo.prompt_sets import PromptSetError, read_prompt_set

        try:
            adapter = adapter_for(spec.diffusers_class)
        except ZooConfigError as exc:
            raise RunConfigError(str(exc)) from None
        if not adapter.TEXT_COMPONENTS:
            raise RunConfigError(f"model.prompt_set: {spec.diffusers_class} is class-conditioned; prompt sets are "
                                 "for the text-to-image classes")
        try:
            prompts = read_prompt_set(spec.prompt_set)
        except PromptSetError as exc:
            raise RunConfigError(str(exc)) from None
        if adapter.VIDEO and prompts.images is not None:  # the images would be FID's reference set
            raise RunConfigError(f"model.prompt_set={spec.prompt_set!r} names reference images, and "
                                 f"{spec.diffusers_class} makes videos: no image-set metric scores them (its rows "
                                 "score each frame, docs/diffusers.md 'Video rows'); give a prompt set without images")
        return prompts

    @classmethod
    def _settings(cls, spec: ModelSpec, prompt_tokens: int | None = None) -> dict:
        """model.zoo, over what a pretrained folder fixes (Wan 2.2's boundary_ratio), with a prompt
        set's size as the bank's (and its encodings' length when known)."""
        settings = dict(spec.zoo)
        if spec.checkpoint == "pretrained" and spec.pretrained:
            from .zoo import ADAPTERS

            if spec.diffusers_class in ADAPTERS:  # an unknown class: zoo_args names the valid ones
                settings = {**ADAPTERS[spec.diffusers_class].folder_settings(spec.pretrained), **settings}
        if spec.prompt_set:
            settings["prompts"] = len(cls.prompt_set(spec))
            if prompt_tokens is not None:
                settings["prompt_tokens"] = prompt_tokens
        return settings

    @classmethod
    def load(cls, spec: ModelSpec, device: torch.device):
        vae = None
        if spec.vae == "pretrained":
            folder = pipeline_vae_folder(spec)
            vae = pipeline_vae_class(folder).from_pretrained(folder, local_files_only=True)
        model = cls._model(spec, device).to(device).eval().requires_grad_(False)
        return model, None if vae is None else vae.to(device).eval().requires_grad_(False)

    @classmethod
    def _model(cls, spec: ModelSpec, device: torch.device | str = "cpu"):
        from .zoo import from_ours

        prompts = cls.prompt_set(spec) if spec.prompt_set else None
        if spec.checkpoint == "pretrained":
            return cls._pretrained(spec, prompts, device)
        if spec.checkpoint not in ("toy", "random"):
            raise RunConfigError(f"model.checkpoint={spec.checkpoint!r}: model=diffusers takes toy, random or "
                                 "pretrained (with model.pretrained)")
        path = cls.checkpoint_path(spec)
        if cls.trained_toy(spec):  # shipped trained toy weights (zoo/toy_weights.py), in their configuration
            from .zoo.toy_weights import load_trained

            return load_trained(cls.build(spec), path)
        if path not in ("toy", "random"):  # our toy asset, converted (DiTTransformer2DModel)
            if spec.scale != "toy":
                raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
            if spec.config:
                raise RunConfigError("model.config changes the toy DiT's architecture; its converted weights need "
                                     "the toy configuration (use model.checkpoint=random for another one)")
            ours = load_checkpoint(build_model("DiT-toy", device="meta"), path)
            return from_ours(ours, official=bool(spec.zoo.get("official", False)))  # its one setting for DiT
        model = cls.build(spec)
        if prompts is not None:  # toy and random weights: the texts over the seeded bank
            model.use_prompts(prompts)
        return model

    @classmethod
    def _pretrained(cls, spec: ModelSpec, prompts, device):
        from .zoo import ZooConfigError, adapter_for, build_zoo
        from .zoo.text import TextEncoderMissing, encode_prompts

        try:  # a missing model.pretrained or config.json: ZooConfigError names the key
            bank = None
            if prompts is not None:  # the folder's text encoders, on the run's device
                bank = encode_prompts(adapter_for(spec.diffusers_class), spec.pretrained, prompts.texts,
                                      int(spec.zoo.get("text_tokens", 0)), device)
            model = build_zoo(spec.diffusers_class, pretrained=spec.pretrained,
                              **cls._settings(spec, None if bank is None else bank.embeddings.shape[1]))
        except (ZooConfigError, TextEncoderMissing) as exc:
            raise RunConfigError(str(exc)) from None
        if prompts is not None:
            model.use_prompts(prompts, bank)
        return model


def loader(spec: ModelSpec) -> type[Registered] | type[Diffusers]:
    """The loader of the described model's kind."""
    return Diffusers if spec.diffusers_class else Registered


def checkpoint_path(spec: ModelSpec):
    """model.checkpoint resolved: a file or folder, `random`, or `toy` (a diffusers class's seeded toy weights)."""
    return loader(spec).checkpoint_path(spec)


def model_fingerprint(spec: ModelSpec) -> str | None:
    """The content hash of the weights a run loads, None for random ones: what the results store's
    shared references, learned routers and calibrations are keyed by."""
    return loader(spec).fingerprint(spec)


def build_configured(spec: ModelSpec, device=None):
    """The described architecture with fresh (or, on `meta`, no) weights."""
    return loader(spec).build(spec, device)


def prompt_set(spec: ModelSpec):
    """The prompt set model.prompt_set names, read, on a model that takes prompts; otherwise a
    RunConfigError naming the key (runs/prepare.py checks it before any compute)."""
    return loader(spec).prompt_set(spec)


def load_model(spec: ModelSpec, device: torch.device):
    """The diffusion model (and VAE, or None) as described; checkpoints load strictly."""
    return loader(spec).load(spec, device)


def pipeline_vae_class(folder: Path):
    """The VAE class a diffusers folder's config.json names: Wan's video VAE (`AutoencoderKLWan`),
    else the image `AutoencoderKL` (SD3's, Flux's, PixArt's, DiT's)."""
    import diffusers

    name = json.loads((Path(folder) / "config.json").read_text()).get("_class_name")
    if name == "AutoencoderKLFlux2":  # its pipeline patchifies 2x2 and undoes batch-norm statistics first
        raise RunConfigError(f"model.vae=pretrained: {str(folder)!r} is FLUX.2's AutoencoderKLFlux2, whose decoding "
                             "(2x2 patches, the VAE's batch-norm statistics undone) is not implemented; use model.vae=none")
    if name == "AutoencoderKLLTXVideo":  # LTXPipeline denormalises per channel and may condition the decoder on t
        raise RunConfigError(f"model.vae=pretrained: {str(folder)!r} is LTX-Video's AutoencoderKLLTXVideo, whose "
                             "decoding is not implemented; use model.vae=none")
    return diffusers.AutoencoderKLWan if name == "AutoencoderKLWan" else diffusers.AutoencoderKL


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
