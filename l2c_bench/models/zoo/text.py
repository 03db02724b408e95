"""A pretrained folder's text encoders, run through diffusers' own pipeline class (the one its
`model_index.json` names) and that pipeline's `encode_prompt`: the conditioning a diffusers user
of the same folder gets, tokenizers, padding, pooling and all (docs/diffusers.md).

The prompts are encoded once, when the model loads, into the prompt bank (prompts.py); the
empty prompt is encoded the same way and is the unconditional row. Nothing is downloaded
(`local_files_only`); a missing encoder or tokenizer is an error naming `model.pretrained` and
the subfolder a diffusers folder of that model holds.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from .prompts import PromptBank


class TextEncoderMissing(ValueError):
    """A pretrained folder without the text encoders its class needs."""


def pipeline_class(folder: Path):
    """The diffusers pipeline class `<folder>/model_index.json` names, and that index."""
    import diffusers

    index = folder / "model_index.json"
    if not index.is_file():
        raise TextEncoderMissing(f"model.pretrained={str(folder)!r}: no model_index.json, so no text encoders; "
                                 "prompts need a whole pipeline folder (save_pretrained of the pipeline, or a "
                                 "downloaded hub repo), not only its transformer")
    components = json.loads(index.read_text())
    name = components["_class_name"]
    if not hasattr(diffusers, name):
        raise TextEncoderMissing(f"model.pretrained={str(folder)!r}: model_index.json names {name!r}, which this "
                                 f"diffusers ({diffusers.__version__}) does not have")
    return getattr(diffusers, name), components


def check_components(folder: Path, index: dict, needed: dict[str, str]) -> None:
    """Each of `needed` ({component: what goes there}) is in the index and on disk."""
    for name, what in needed.items():
        if not index.get(name) or index[name] == [None, None] or not (folder / name).is_dir():
            raise TextEncoderMissing(f"model.pretrained={str(folder)!r}: its {name}/ is missing; a diffusers "
                                     f"folder of this model holds {what} there")


@torch.no_grad()
def encode_prompts(adapter, folder: str | Path, texts: tuple[str, ...], tokens: int = 0,
                   device: torch.device | str = "cpu") -> PromptBank:
    """`texts` and the empty prompt through the folder's text encoders: a bank of P + 1 rows.
    tokens: the pipeline's `max_sequence_length` (0: its default)."""
    folder = Path(str(folder))
    cls, index = pipeline_class(folder)
    check_components(folder, index, adapter.TEXT_COMPONENTS)
    skip = {name: None for name in ("transformer", "transformer_2", "vae", "image_encoder", "feature_extractor")
            if name in inspect.signature(cls.__init__).parameters}
    skip.update({name: None for name in adapter.OPTIONAL_TEXT_COMPONENTS if not (folder / name).is_dir()})
    pipe = cls.from_pretrained(folder, local_files_only=True, **skip).to(device)
    if not tokens:
        tokens = inspect.signature(pipe.encode_prompt).parameters["max_sequence_length"].default
    embeddings, pooled, mask = adapter.encode_text(pipe, [*texts, ""], tokens, torch.device(device))
    return PromptBank.encoded(embeddings, pooled, mask)
