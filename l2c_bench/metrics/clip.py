"""CLIP score of text-to-image samples (Hessel et al. 2021, as torchmetrics reports it):
100 * max(cos(image embedding, text embedding), 0) per sample, with local CLIP weights.

The network and its preprocessing are transformers' `CLIPModel` and `CLIPProcessor` from a local
folder (`metrics.clip_model`, e.g. a downloaded `openai/clip-vit-large-patch14`): nothing is
downloaded, and a missing folder is an error naming the key. Images go to the processor as
uint8 values, as torchmetrics' `CLIPScore` passes them; tests/test_text_to_image.py checks that
our mean equals torchmetrics' `CLIPScore` on the same model, images and texts. Two differences,
both where torchmetrics departs from the definition: we clamp each sample's score at 0 (Hessel
et al.), torchmetrics 1.9 clamps the mean; a caption longer than the text context is truncated
by the tokenizer, so it keeps its end token (which CLIP pools), where torchmetrics slices the
token ids and drops it. Per-sample scores are what the row's interval needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class ClipModelMissing(FileNotFoundError):
    """metrics.clip_model names no local CLIP folder."""


def check_clip_folder(folder: str | Path) -> Path:
    """The folder, or an error naming metrics.clip_model and what goes there."""
    path = Path(str(folder)).expanduser()
    if not (path / "config.json").is_file():
        raise ClipModelMissing(f"metrics.clip_model={str(folder)!r}: no CLIP there (config.json, weights, tokenizer "
                               "and preprocessor files, e.g. a downloaded openai/clip-vit-large-patch14); nothing is "
                               "downloaded at run time")
    return path


def clip_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> np.ndarray:
    """(N, D), (N, D) -> (N,) float64: 100 * max(cosine similarity, 0) of each pair."""
    cosine = torch.nn.functional.cosine_similarity(image_embeddings.double(), text_embeddings.double(), dim=-1)
    return (100 * cosine.clamp(min=0)).cpu().numpy()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, 3, H, W), as a saved image would hold them."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ClipScorer:
    """Local CLIP weights and preprocessing; `scores(images, texts)` -> (N,) per-sample scores."""

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        path = check_clip_folder(folder)
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self.context = self.model.config.text_config.max_position_embeddings
        self.tag = f"clip-{path.name}"

    @torch.no_grad()
    def scores(self, images: torch.Tensor, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """images (N, 3, H, W) in [-1, 1], texts N strings -> (N,) float64 CLIP scores."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        out = []
        for start in range(0, len(texts), batch_size):
            inputs = self.inputs(images[start:start + batch_size], texts[start:start + batch_size])
            image = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            text = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            out.append(clip_scores(_tensor(image), _tensor(text)))
        return np.concatenate(out)


    def inputs(self, images: torch.Tensor, texts: list[str]) -> dict[str, torch.Tensor]:
        """The processor's pixel values (N, 3, S, S) and token ids (N, <= context), on the device."""
        inputs = self.processor(text=texts, images=list(to_uint8(images).cpu()), return_tensors="pt", padding=True,
                                truncation=True, max_length=self.context)
        return {k: v.to(self.device) for k, v in inputs.items()}


def _tensor(output) -> torch.Tensor:
    """transformers 5 returns a model output where 4.x returned the projected tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
