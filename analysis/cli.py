"""The command line shared by the analysis scripts: rows in, files out, print what was written.

    --results DIR                               the local results store (default: results)
    --source wandb --project P [--entity E]     the W&B mirror instead (online)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def results_to_files(doc: str, write_all, argv=None) -> None:
    """Parse the source and --out, call write_all(rows DataFrame, out dir), print the files."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results store (a folder of result.json rows)")
    parser.add_argument("--source", choices=["local", "wandb"], default="local")
    parser.add_argument("--project", default="l2c-bench", help="W&B project (--source wandb)")
    parser.add_argument("--entity", default=None, help="W&B entity (--source wandb)")
    parser.add_argument("--out", default="analysis_out")
    args = parser.parse_args(argv)
    if args.source == "wandb":
        from .sources import wandb_rows

        rows = wandb_rows(args.project, args.entity)
    else:
        from l2c_bench.records import load_results
        from l2c_bench.records.store import CorruptRow

        try:
            rows = load_results(args.results)
        except CorruptRow as exc:  # one line naming the file, not a traceback
            parser.exit(1, f"error: {exc}\n")
    for path in write_all(rows, Path(args.out)):
        print(path)
