"""The GPU speed suite runs end to end (toy widths, paper depths, so the official routers fit)."""

import json

import pandas as pd
import pytest
from conftest import ROOT

from l2c_bench.benchmarks.gpu_suite import POINTS, main, paper_latency


@pytest.mark.slow
def test_suite_writes_rows_table_and_router_cost(tmp_path):
    # bf16 first: its model stores bf16 weights, so the float32 point after it must get a float32 model
    rows = main(["--out", str(tmp_path), "--smoke", "--select", "1,0"])
    assert [(r["arch"], r["nfe"], r["dtype"], r["weights_dtype"]) for r in rows] == [
        ("DiT-toy", 20, "bf16", "bf16"), ("DiT-toy", 20, "fp32", "fp32")]
    logged = [json.loads(line) for line in (tmp_path / "gpu_bench.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and sum("router_iteration" in r for r in logged) == 2  # DiT and U-ViT iteration cost
    assert all(r["iteration_in_forwards"] > 1 for r in logged if "router_iteration" in r)
    for row in rows:  # the official DDIM-20 router at 0.1 on 28 blocks: MACs speedup of Table 1's setting
        assert 1.2 < row["macs_speedup"] < 1.35 and row["cached_ratio"] > 0.2
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "2.87 -> 2.26" in table and "Harness overhead" in table and table.count("| DiT-toy |") == 2


def test_budget_skips_points_and_says_so(tmp_path):
    assert main(["--out", str(tmp_path), "--smoke", "--budget-s", "0", "--no-router"]) == []
    assert (tmp_path / "gpu_bench.md").read_text().count("dit NFE") == sum(p.family == "dit" for p in POINTS)


def test_paper_latencies_are_tables_1_and_2():
    """paper_latency against the paper's tables read here with pandas: the 256 px row of the model
    (DiT-XL/2 in Table 1, U-ViT-H/2 in Table 2) at that NFE, the family's sampler as the uncached one."""
    papers = ROOT / "analysis" / "paper_numbers"
    for family, csv, model, sampler in (("dit", "table1_dit.csv", "DiT-XL/2", "DDIM"),
                                        ("uvit", "table2_uvit.csv", "U-ViT-H/2", "DPM-Solver-2")):
        table = pd.read_csv(papers / csv)
        rows = table[(table["model"] == model) & (table["resolution"] == 256)]
        for nfe in {*table["nfe"], *(p.nfe for p in POINTS if p.family == family), 7}:
            at = rows[rows["nfe"] == nfe].set_index("method")["latency_s"]
            expected = (at.get(sampler), at.get("L2C"))
            assert paper_latency(family, int(nfe)) == tuple(None if v is None else float(v) for v in expected), \
                (family, nfe)
        # every point of the GPU suite has both of the paper's numbers to compare with
        assert all(None not in paper_latency(family, p.nfe) for p in POINTS if p.family == family)
    # the values the suite's table prints (gpu_bench.md), spelled out once
    assert paper_latency("dit", 20) == (2.87, 2.26) and paper_latency("uvit", 50) == (19.37, 11.16)
