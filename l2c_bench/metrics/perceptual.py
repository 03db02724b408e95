"""Per-sample paired image metrics: SSIM and LPIPS of each image against its reference twin.

A cached sampler and its reference (the uncached twin, or the converged sampler) start from the
same seeds, so row i of `images` and row i of `reference` are the same sample made two ways; these
metrics score each pair on its own and return one value per sample, (n,) float64 on the CPU,
ready for per-sample records and jackknife intervals. Both metrics come from torchmetrics rather
than our own code, so that their numbers mean what the literature means by them.

LPIPS never downloads anything: its backbone's weights are a local file (config key
`metrics.lpips_backbone`), its linear heads are the ones torchmetrics ships inside its package.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..models.checkpoint import read_state_dict

if TYPE_CHECKING:
    from torchmetrics.functional.image.lpips import _LPIPS

# SSIM as Wang et al. (2004) define it: an 11-wide Gaussian window of sigma 1.5. torchmetrics
# derives a Gaussian window's width from sigma alone (2 * int(3.5 * sigma + 0.5) + 1; its
# `kernel_size` only applies to the uniform window), so a narrower window means a smaller sigma.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_DATA_RANGE = 2.0  # images in [-1, 1]

LPIPS_NETS = ("alex", "vgg", "squeeze")
# the torchvision network behind each LPIPS net: the backbone file is its state dict
TORCHVISION_NETS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# The smallest image side each backbone runs on: below it a pooling layer before the last tap
# has an empty output and torchmetrics' forward fails (measured with torchmetrics 1.9 and
# checked by tests/test_perceptual.py). AlexNet: the 11/4 stem and two 3/2 max pools; VGG16: four
# 2/2 max pools; SqueezeNet 1.1: the 3/2 stem and three 3/2 ceil-mode max pools.
LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16, "squeeze": 17}
# torchmetrics' wrappers keep torchvision's `features[i]` under its index i inside a slice
# (Alexnet, Vgg16: `slice<k>.<i>.<param>`; SqueezeNet: `slices.<k>.<i>.<param>`), so the index
# gives the key in torchvision's own state dict, `features.<i>.<param>`.
_SLICED = re.compile(r"^(?:slice\d+|slices\.\d+)\.(\d+)\.(.+)$")


def _torchmetrics_image() -> ModuleType:
    """torchmetrics' image metrics, imported on first use: the rest of the package (and this
    module's constants, which config checks read) must import without it."""
    try:
        import torchmetrics.functional.image as tm_image
        import torchmetrics.functional.image.lpips  # noqa: F401 - the `lpips` submodule, used below
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "per-sample SSIM and LPIPS come from torchmetrics: pip install 'torchmetrics>=1.4'"
        ) from exc
    return tm_image


def _check_pairs(images: torch.Tensor, reference: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape != reference.shape:
        raise ValueError(
            "paired image metrics need images and reference of one shape (n, C, H, W), row i paired "
            f"with row i; got {tuple(images.shape)} and {tuple(reference.shape)}"
        )


def ssim_window(height: int, width: int) -> int:
    """SSIM's Gaussian window width for images of this size: 11, or the largest odd width that
    fits the smaller side when a side is below 11 (a wider window would mostly average the
    reflection padding, and torchmetrics' reflection padding fails below side 6)."""
    side = min(height, width)
    return min(SSIM_WINDOW, side if side % 2 else side - 1)


@torch.no_grad()
def ssim_per_sample(images: torch.Tensor, reference: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """SSIM of each image against its paired reference: (n, C, H, W) in [-1, 1] twice -> (n,) float64.

    torchmetrics' `structural_similarity_index_measure` with data_range 2 and its default Gaussian
    window (11 wide, sigma 1.5), reduction "none": the mean of the SSIM map over channels and
    pixels (torchmetrics pads by reflection, so border pixels count too). Images with a side below
    11 get the largest odd window that fits (`ssim_window`), with sigma shrunk in proportion
    (1.5 * window / 11), since torchmetrics sizes a Gaussian window by its sigma. The toy models'
    3 x 32 x 32 images take the full window.

    Computed in float32 on the images' device (the run's GPU at paper scale): SSIM's constants
    C1 = (0.01 * 2)^2 and C2 = (0.03 * 2)^2 keep its ratios far from where float32's rounding of
    the local variances (E[x^2] - mu^2) matters, and float64's grouped convolutions are several
    times slower on the CPU (docs/speed.md). Batches of `batch_size` bound memory (torchmetrics
    holds five padded copies of a batch); each pair's value does not depend on its batch.
    """
    _check_pairs(images, reference)
    if images.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    ssim = _torchmetrics_image().structural_similarity_index_measure
    window = ssim_window(*images.shape[-2:])
    sigma = SSIM_SIGMA * window / SSIM_WINDOW
    out = [
        ssim(
            a.float(), b.float(), gaussian_kernel=True, sigma=sigma, kernel_size=window,
            data_range=SSIM_DATA_RANGE, reduction="none",
        ).reshape(-1)
        for a, b in zip(images.split(batch_size), reference.split(batch_size), strict=True)
    ]
    return torch.cat(out).double().cpu()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_heads(model: _LPIPS, net: str) -> None:
    """The LPIPS linear heads (1x1 convs, one per tap) from the file torchmetrics ships.

    Loaded here, key by key, rather than by `_LPIPS(pretrained=True)`: that path loads with
    strict=False, so a renamed key would silently leave a head at its random initialisation."""
    path = Path(_torchmetrics_image().lpips.__file__).parent / "lpips_models" / f"{net}.pth"
    heads = torch.load(path, map_location="cpu", weights_only=True)  # saved from CUDA tensors
    for k, lin in enumerate(model.lins):
        conv = lin.model[-1]  # [Dropout, Conv2d] with use_dropout=True, as the file's keys say
        key = f"lin{k}.model.1.weight"
        if key not in heads or heads[key].shape != conv.weight.shape:
            raise ValueError(f"torchmetrics' LPIPS heads {path} lack {key} of shape {tuple(conv.weight.shape)}")
        conv.weight.copy_(heads[key])


def _load_backbone(model: _LPIPS, state: dict[str, torch.Tensor], net: str, path: Path) -> None:
    """Every backbone parameter from torchvision's state dict (`features.<i>.<param>` keys; the
    classifier's keys, if present, are not used). Missing or misshapen keys raise ValueError."""
    mapped, missing = {}, []
    for name, param in model.net.state_dict().items():
        match = _SLICED.match(name)
        if match is None:  # a torchmetrics layout this mapping does not know: fail, never guess
            raise ValueError(f"unexpected parameter {name!r} in torchmetrics' LPIPS {net} backbone")
        key = f"features.{match[1]}.{match[2]}"
        if key not in state:
            missing.append(key)
        elif state[key].shape != param.shape:
            raise ValueError(
                f"{path} (config key `metrics.lpips_backbone`): {key} has shape {tuple(state[key].shape)}, "
                f"LPIPS {net} needs {tuple(param.shape)}; is it torchvision's {TORCHVISION_NETS[net]}?"
            )
        else:
            mapped[name] = state[key]
    if missing:
        raise ValueError(
            f"{path} (config key `metrics.lpips_backbone`) lacks {len(missing)} of the "
            f"{TORCHVISION_NETS[net]} backbone's parameters: {', '.join(missing)}"
        )
    model.net.load_state_dict(mapped, strict=True)


class Lpips:
    """LPIPS (Zhang et al. 2018) of each image against its paired reference, through torchmetrics'
    own `_LPIPS` module, built without any download (see `from_files`).

    `scores(images, reference)`: (n, 3, H, W) in [-1, 1] twice (LPIPS' own input convention)
    -> (n,) float64 on the CPU, 0 for identical images, larger = more different.
    `tag`: `lpips-<net>-<first 12 hex of the backbone file's sha256>`, naming the weights behind
    the numbers.

    Small images: images with a side below the backbone's smallest workable side
    (LPIPS_MIN_SIDE: AlexNet 31, VGG16 16, SqueezeNet 17) are upsampled bilinearly first so that
    their smaller side reaches it; the toy models' 32 x 32 images need none. At 32 x 32 AlexNet's
    last three taps are 1 x 1 maps, so they compare whole-image features rather than patches.
    """

    def __init__(self, model: _LPIPS, net: str, backbone_sha256: str, batch_size: int = 64):
        self.model = model.eval()
        self.net = net
        self.backbone_sha256 = backbone_sha256
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    @property
    def tag(self) -> str:
        return f"lpips-{self.net}-{self.backbone_sha256[:12]}"

    @classmethod
    def from_files(cls, backbone: str | Path, net: str = "alex", device: str | torch.device = "cpu",
                   batch_size: int = 64) -> Lpips:
        """LPIPS `net` with its backbone's weights read from the local file `backbone`.

        `backbone`: torchvision's state dict of the network (alexnet, vgg16 or squeezenet1_1), as
        torchvision saves it (e.g. alexnet-owt-7be5be79.pth); only its `features.*` keys are used.
        `_LPIPS(pnet_rand=True)` builds the backbone with torchvision's `weights=None`, which
        downloads nothing; `pretrained=False` skips torchmetrics' own (non-strict) head loading,
        done strictly by `_load_heads` instead.
        """
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS net {net!r} is unknown; valid: {', '.join(LPIPS_NETS)}")
        path = Path(backbone)
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS backbone weights not found: {path} (config key `metrics.lpips_backbone`). It must "
                f"be a local file of torchvision's {TORCHVISION_NETS[net]} state dict (e.g. "
                "alexnet-owt-7be5be79.pth for alex); LPIPS weights are never downloaded"
            )
        state = read_state_dict(path, config_key="metrics.lpips_backbone")
        model = _torchmetrics_image().lpips._LPIPS(
            pretrained=False, net=net, pnet_rand=True, use_dropout=True, eval_mode=True
        )
        with torch.no_grad():
            _load_heads(model, net)
        _load_backbone(model, state, net, path)
        return cls(model.to(device), net, _sha256(path), batch_size)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (bilinear) images whose smaller side is below the backbone's smallest side."""
        height, width = x.shape[-2:]
        low = LPIPS_MIN_SIDE[self.net]
        if min(height, width) >= low:
            return x
        scale = low / min(height, width)
        size = (max(low, round(height * scale)), max(low, round(width * scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def scores(self, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] twice, row i paired with row i -> (n,) float64 LPIPS, CPU."""
        _check_pairs(images, reference)
        if images.shape[1] != 3:
            raise ValueError(f"LPIPS scores RGB images (n, 3, H, W); got {tuple(images.shape)}")
        self.model.eval()  # dropout in the heads must stay off
        out = []
        for a, b in zip(images.split(self.batch_size), reference.split(self.batch_size), strict=True):
            a = self._fit(a.to(self.device, torch.float32))
            b = self._fit(b.to(self.device, torch.float32))
            out.append(self.model(a, b).reshape(-1).double().cpu())  # (m, 1, 1, 1) -> (m,)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
