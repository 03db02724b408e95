"""The metric registry (l2c_bench/metrics/registry.py): the metrics registered once, their
directions as the analysis had them, and the run code that loops over them kept short."""

import ast
import math

import pytest
from conftest import ROOT

from l2c_bench.metrics import registry


def test_mean_metrics_and_their_ranges():
    assert registry.mean_ranges() == {
        "clip_score": (0.0, 100.0), "converged_image_ssim": (-1.0, 1.0), "paired_image_ssim": (-1.0, 1.0),
        "converged_image_lpips": (0.0, math.inf), "paired_image_lpips": (0.0, math.inf),
        "paired_frame_psnr_db": (0.0, math.inf), "temporal_change_ratio": (0.0, math.inf),  # video (metrics/video.py)
        "converged_frame_psnr_db": (0.0, math.inf)}


def test_the_analysis_reads_the_registered_directions():
    from analysis.claims import QUALITY_AXES
    from analysis.metrics import METRICS

    # as analysis/metrics.py and analysis/claims.py declared them before the registry
    assert {name: higher for name, (_, _, higher, _) in METRICS.items()} == {
        "macs_t": False, "latency_s": False, "speedup": True, "is": True, "fid": False, "sfid": False,
        "precision": True, "recall": True, "kid": False, "remove_ratio": True, "cached_branches": True,
        "paired_psnr_db": True, "converged_psnr_db": True, "paired_latent_psnr_db": True,
        "converged_frame_psnr_db": True}  # a toy video's primary quality (added after the registry)
    assert QUALITY_AXES == {
        "fid": False, "kid": False, "fid_vs_converged": False, "kid_vs_converged": False,
        "converged_latent_psnr_db": True, "converged_image_psnr_db": True, "converged_latent_mse": False,
        "converged_image_mse": False, "paired_image_psnr_db": True, "paired_latent_psnr_db": True, "is": True,
        "converged_image_ssim": True, "paired_image_ssim": True, "converged_image_lpips": False,
        "paired_image_lpips": False, "clip_score": True}
    directions = registry.directions()
    for column, _, higher, _ in METRICS.values():
        if column.startswith("metrics."):
            assert directions[column.removeprefix("metrics.")] is higher
    with pytest.raises(KeyError, match="no registered metric"):
        registry.higher_is_better("metrics.nfe")


def test_a_metric_is_registered_once_under_a_name():
    with pytest.raises(ValueError, match="twice"):
        registry.register(registry.METRICS["clip_score"])
    with pytest.raises(ValueError, match="needs a name"):
        registry.register(registry.Metric)
    keys = [key for metric in registry.METRICS.values() for key in metric.part_keys]
    assert len(keys) == len(set(keys))


def test_no_function_in_runs_is_over_60_lines():
    long = []
    for path in sorted((ROOT / "l2c_bench" / "runs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long
