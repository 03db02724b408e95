"""Prompt sets: the texts a text-to-image run conditions on, kept as data (docs/diffusers.md).

`model.prompt_set` names one:
- `toy`: the short list shipped with the package (toy/assets/prompts.txt);
- a `.txt` file: one prompt per line (blank lines and lines starting with `#` are skipped);
- a `.jsonl` file: one object per line with `prompt` (or `caption`) and an optional `image`;
- a `.csv` file: a `prompt` (or `caption`) column and an optional `image` column.

Image paths are relative to the file. Where the prompts name images (every one of them), those
images are the run's reference set for FID/KID unless `metrics.reference` names another (COCO
captions with their images, say). Sample i of a run takes prompt i mod P, as it takes class
i mod K on the class-conditioned models.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

TOY_PROMPTS = Path(__file__).resolve().parents[2] / "toy" / "assets" / "prompts.txt"
TEXT_KEYS = ("prompt", "caption")


class PromptSetError(ValueError):
    """A `model.prompt_set` that cannot be read (raised before any compute)."""


@dataclass(frozen=True)
class PromptSet:
    texts: tuple[str, ...]
    images: tuple[Path, ...] | None  # one per prompt, or None
    origin: str  # what the row records: the file (or `toy`) and its prompt count
    sha256: str  # the file's content hash: learned routers and references are keyed by it

    def __len__(self) -> int:
        return len(self.texts)


def read_prompt_set(spec: str) -> PromptSet:
    """The prompt set `model.prompt_set` names (see the module docstring)."""
    path = TOY_PROMPTS if spec == "toy" else Path(str(spec)).expanduser()
    if not path.is_file():
        raise PromptSetError(f"model.prompt_set={spec!r}: no such file; give `toy` or a .txt, .jsonl or .csv "
                             "file of prompts")
    reader = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv}.get(path.suffix.lower())
    if reader is None:
        raise PromptSetError(f"model.prompt_set={spec!r}: unknown format {path.suffix!r}; valid: .txt (one prompt "
                             "per line), .jsonl or .csv (a `prompt` or `caption` field, optional `image`)")
    rows = reader(path, spec)
    if not rows:
        raise PromptSetError(f"model.prompt_set={spec!r}: the file holds no prompt")
    named = [image for _, image in rows if image]
    if named and len(named) != len(rows):
        raise PromptSetError(f"model.prompt_set={spec!r}: {len(named)} of {len(rows)} prompts name an image; "
                             "a reference set needs one image per prompt, or none at all")
    images = None
    if named:
        images = tuple((path.parent / image).resolve() for image in named)
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise PromptSetError(f"model.prompt_set={spec!r}: {len(missing)} image(s) not found, e.g. {missing[0]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PromptSet(tuple(text for text, _ in rows), images, f"{'toy' if spec == 'toy' else path} "
                     f"({len(rows)} prompts)", digest)


def _txt(path: Path, spec: str) -> list[tuple[str, None]]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [(line, None) for line in lines if line and not line.startswith("#")]


def _record(record: dict, where: str, spec: str) -> tuple[str, str | None]:
    text = next((record[k] for k in TEXT_KEYS if isinstance(record.get(k), str)), None)
    if text is None:
        raise PromptSetError(f"model.prompt_set={spec!r}: {where} has no `prompt` or `caption` text")
    return text.strip(), record.get("image") or None


def _jsonl(path: Path, spec: str) -> list[tuple[str, str | None]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"model.prompt_set={spec!r}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise PromptSetError(f"model.prompt_set={spec!r}: line {number} is not a JSON object")
        rows.append(_record(record, f"line {number}", spec))
    return rows


def _csv(path: Path, spec: str) -> list[tuple[str, str | None]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [_record(record, f"row {number}", spec) for number, record in enumerate(csv.DictReader(fh), 2)]
