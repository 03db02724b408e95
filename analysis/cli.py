"""The command line shared by the analysis scripts: --results DIR --out DIR, print what was written."""

from __future__ import annotations

import argparse
from pathlib import Path


def results_to_files(doc: str, write_all, argv=None) -> None:
    """Parse --results/--out, call write_all(results DataFrame, out dir), print the files."""
    from l2c_bench.records import load_results

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--results", default="results", help="the results store (a folder of result.json rows)")
    parser.add_argument("--out", default="analysis_out")
    args = parser.parse_args(argv)
    for path in write_all(load_results(args.results), Path(args.out)):
        print(path)
