"""The paper's published numbers (analysis/paper_numbers/*.csv) and which of our rows each table holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent / "paper_numbers"
BASELINES = {"DDPM", "DDIM", "DPM-Solver-2", "Flow Euler"}


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    keys: tuple[str, ...]  # the columns that identify a row (ours and the paper's)
    metrics: tuple[str, ...]  # paper columns, in the paper's order
    families: tuple[str, ...]  # model name prefixes
    methods: tuple[str, ...] | None = None  # method labels that belong (None: any)
    caches: tuple[str, ...] | None = None  # cache methods that belong (None: any)


TABLES = (
    TableSpec("table1_dit", "Table 1: DiT, DDIM/DDPM vs L2C", ("model", "resolution", "method", "nfe"),
              ("macs_t", "latency_s", "speedup", "is", "fid", "sfid", "precision", "recall"), ("DiT",),
              ("DDPM", "DDIM", "L2C")),
    TableSpec("table2_uvit", "Table 2: U-ViT, DPM-Solver-2 vs L2C", ("model", "resolution", "method", "nfe"),
              ("macs_t", "latency_s", "speedup", "fid"), ("U-ViT",), ("DPM-Solver-2", "L2C")),
    TableSpec("table3_uvit_cache_methods", "Table 3: U-ViT, cache methods", ("model", "resolution", "method", "nfe"),
              ("latency_s", "speedup", "fid"), ("U-ViT",), ("DPM-Solver-2", "DeepCache", "L2C", "Faster Diffusion")),
    TableSpec("table4_cacheable_ratio", "Table 4: cached ratio of the routers", ("model", "nfe", "threshold"),
              ("remove_ratio",), ("DiT", "U-ViT"), caches=("l2c",)),
    TableSpec("table5_7_layer_dropout", "Tables 5/7: dropping vs caching layers", ("model", "resolution", "nfe", "method"),
              ("latency_s", "speedup", "is", "fid", "sfid", "precision", "recall"), ("DiT",),
              ("Random Drop", "L2C")),
    TableSpec("table6_shifted_cache", "Table 6: U-ViT, shifted vs non-shifted cache step",
              ("model", "resolution", "nfe", "method"), ("latency_s", "speedup", "is", "fid", "sfid", "precision", "recall"),
              ("U-ViT",), ("DPM-Solver-2", "Cache (all layers)", "Cache - shifted (all layers)")),
    TableSpec("table9_lambda", "Table 9: the router's lambda", ("model", "resolution", "nfe", "lambda"),
              ("latency_s", "speedup", "is", "fid", "sfid", "precision", "recall"), ("DiT",), caches=("l2c",)),
)

_PAPER_LABELS = {"Learning-to-Cache": "L2C"}


def load_paper(spec: TableSpec) -> pd.DataFrame:
    """The paper's rows for a table, keyed like ours (method labels mapped, ratios as fractions)."""
    frame = pd.read_csv(PAPER_DIR / f"{spec.name}.csv")
    if "method" in frame:
        frame["method"] = frame["method"].replace(_PAPER_LABELS)
    if "sampler" in frame and "method" not in frame:
        frame["method"] = "L2C"
    return frame
