"""Sweeps through Hydra's submitit launcher on a real (local, one-node) SLURM cluster."""

import json
import subprocess
import sys
import time

import pytest

from l2c_bench.records import load_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["cache=none", "steps=2", "metrics.num_samples=2", "metrics.batch_size=2", "metrics.timing_batch=1",
        "metrics.timing_repeats=1", "metrics.reference_samples=20", "metrics.grid_samples=2", "tracker=none",
        "metrics.converged_nfe=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


def sweep(env, results, *overrides, timeout=600):
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "hydra/launcher=slurm", f"results_dir={results}",
           *TINY, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_four_point_sweep_relaunch_and_provenance(slurm_cluster, tmp_path):
    proc = sweep(slurm_cluster, tmp_path, "model=dit,uvit", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_results(tmp_path)
    assert len(rows) == 4 and set(rows.status) == {"ok"}
    assert rows["provenance.slurm_job_id"].notna().all()
    assert rows["provenance.slurm_job_id"].nunique() == 4
    # the summary read back from the array's rows: every point, by model (summary.SweepSummary)
    summary = proc.stdout[proc.stdout.index("Sweep summary:"):]
    assert summary.splitlines()[0] == "Sweep summary: 4 ok, 0 not ok"
    assert all(run_id in summary for run_id in rows.run_id)
    assert summary.index("DiT-toy") < summary.index("U-ViT-toy")
    before = {p: p.read_text() for p in tmp_path.rglob("result.json")}
    again = sweep(slurm_cluster, tmp_path, "model=dit,uvit", "seed=0,1")
    assert again.returncode == 0
    assert "Sweep summary: 4 ok (4 skipped: an ok row existed), 0 not ok" in again.stdout
    after = {p: p.read_text() for p in tmp_path.rglob("result.json")}
    assert after == before  # every point skipped: rows untouched


def test_hard_killed_job_is_reported_and_leaves_no_row(slurm_cluster, tmp_path):
    """A job SIGKILLed mid-run: the sweep returns (no hang), no partial row; relaunch completes it."""
    # A point that surely runs when we kill it 3 s after it starts (50 steps over 16 samples: about
    # 15 s in all here, 3 of them importing); the relaunch runs it whole. Killed after it finished,
    # the assertions below fail: never a vacuous pass.
    slow = ["steps=50", "metrics.num_samples=16", "metrics.batch_size=16", "seed=5"]
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "hydra/launcher=slurm", f"results_dir={tmp_path}",
           *TINY, *slow]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_cluster)
    job = _running_job(slurm_cluster, tmp_path)
    assert job, "the job never started"
    time.sleep(3)
    subprocess.run(["scancel", "--signal=KILL", "--full", job], env=slurm_cluster, check=True)
    try:
        _, err = proc.communicate(timeout=180)  # bounded: the sweep must notice the dead job
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the sweep hung on a hard-killed job")
    # reported: the sweep fails, naming the job and its fate (submitit's UncompletedJobError)
    assert proc.returncode != 0
    assert "UncompletedJobError" in err and f"Job {job} " in err and "CANCELLED" in err, err[-2000:]
    assert not list(tmp_path.rglob("result.json"))
    assert not list(tmp_path.rglob("*.tmp"))
    done = sweep(slurm_cluster, tmp_path, *slow)  # the same point again
    assert done.returncode == 0, done.stderr[-2000:]
    rows = load_results(tmp_path)
    assert rows.status.tolist() == ["ok"] and rows["config.steps"].tolist() == [50]


def _running_job(env, results_dir, timeout_s=60):
    """This test's running job: its batch script lies under `results_dir` (`_submitit/`). An
    earlier test's array task can still be finishing, and killing that one fails."""
    for _ in range(int(timeout_s / 0.5)):
        out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i|%o"], capture_output=True, text=True,
                             env=env).stdout.splitlines()
        ours = [line.split("|")[0] for line in out if str(results_dir) in line]
        if ours:
            return ours[0]
        time.sleep(0.5)
    return None


def test_requeued_job_completes_with_one_row(slurm_cluster, tmp_path):
    cmd = [sys.executable, "-m", "l2c_bench.run", "-m", "hydra/launcher=slurm", f"results_dir={tmp_path}",
           *TINY, "steps=20", "metrics.num_samples=16", "metrics.batch_size=16", "seed=9"]  # ~14 s a run
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_cluster)
    job = _running_job(slurm_cluster, tmp_path)
    assert job, "the job never started"
    time.sleep(2)
    subprocess.run(["scontrol", "requeue", job], env=slurm_cluster, check=True)
    requeued = time.monotonic()
    # SLURM delays a requeued job's start by minutes; once it is pending again, let it go early, but
    # not within 2 s of the requeue: slurmd revokes the old run's credential with a time stamp in
    # whole seconds, and a restart launched in that second is killed ("Job credential revoked").
    for _ in range(60):
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                               env=slurm_cluster).stdout.strip()
        if state == "PENDING":
            time.sleep(max(0.0, 2.0 - (time.monotonic() - requeued)))
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm_cluster)
            break
        time.sleep(0.5)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-2000:]
    rows = load_results(tmp_path)
    assert rows.status.tolist() == ["ok"]
    restarts = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                              env=slurm_cluster).stdout
    assert "Restarts=1" in restarts


def test_two_sweeps_into_one_folder_at_once(slurm_cluster, tmp_path):
    a = subprocess.Popen([sys.executable, "-m", "l2c_bench.run", "-m", "hydra/launcher=slurm",
                          f"results_dir={tmp_path}", *TINY, "seed=0,1"], env=slurm_cluster,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = sweep(slurm_cluster, tmp_path, "seed=1,2")
    a.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0
    rows = load_results(tmp_path)
    assert sorted(rows.run_id.unique()) == sorted(rows.run_id) and len(rows) == 3  # seeds 0, 1, 2
    for path in tmp_path.rglob("result.json"):
        json.loads(path.read_text())  # every row is whole


def test_sharded_point_as_slurm_array_writes_one_row(slurm_cluster, tmp_path):
    """Three shard jobs of one point (running side by side): three shard files, one scored row."""
    proc = sweep(slurm_cluster, tmp_path, "metrics.num_samples=6", "metrics.batch_size=2", "shard.count=3",
                 "shard.index=0,1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_results(tmp_path)
    assert len(rows) == 1 and rows.status.iloc[0] == "ok", rows.get("error")
    assert rows["metrics.shards"].iloc[0] == 3 and rows["metrics.num_samples"].iloc[0] == 6
    run_dir = tmp_path / rows.run_id.iloc[0]
    assert len(list((run_dir / "shards").glob("*-of-003.pt"))) == 3
