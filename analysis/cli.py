"""The command line shared by the analysis scripts: rows in, files out, print what was written.

    --results DIR                               the local results store (default: results)
    --source wandb --project P [--entity E]     the W&B mirror instead (online)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def results_to_files(doc: str, write_all, argv=None, *, samples: bool = False, extra=None, options=None) -> None:
    """Parse the source and --out, call write_all(rows DataFrame, out dir, **options(args)), print
    the files. `samples`: rows with their per-sample records (load_results); `extra(parser)` adds a
    script's own arguments. A corrupt row is named in a warning and left out; a --results folder
    that does not exist is an error naming it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results store (a folder of result.json rows)")
    parser.add_argument("--source", choices=["local", "wandb"], default="local")
    parser.add_argument("--project", default="l2c-bench", help="W&B project (--source wandb)")
    parser.add_argument("--entity", default=None, help="W&B entity (--source wandb)")
    parser.add_argument("--out", default="analysis_out")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # a skipped row or record: one line naming it, on stderr
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
        rows = _rows(parser, args, samples)
        for path in write_all(rows, Path(args.out), **(options(args) if options else {})):
            print(path)


def _rows(parser: argparse.ArgumentParser, args: argparse.Namespace, samples: bool):
    if args.source == "wandb":
        from .sources import wandb_rows

        return wandb_rows(args.project, args.entity)
    from l2c_bench.records import load_results

    if not Path(args.results).is_dir():
        parser.exit(1, f"error: --results {args.results}: no such folder (the results store: a folder of "
                       f"<run_id>/result.json rows)\n")
    return load_results(args.results, samples=samples, skip_corrupt=True)
