"""The commands without tests of their own: the router-iteration benchmark, toy training, the analysis CLI."""

import ast
import json

import pytest
import torch
import torch.nn.functional as F

from analysis import tables
from l2c_bench.benchmarks import router_learning as bench_router
from l2c_bench.models import build_model, load_checkpoint, read_state_dict
from l2c_bench.records import write_row
from l2c_bench.toy import train as toy_train
from l2c_bench.toy.classifier import ToyClassifier
from l2c_bench.toy.data import make_batch


@pytest.mark.slow
def test_bench_router_runs_each_part_and_reports_it_in_forward_units(capsys, monkeypatch):
    """The real parts run (a finite, differentiable L2C loss each iteration); the clock is a fake one
    charging each part a known cost, so the row's numbers are exact."""
    costs_s = {"forward": 0.010, "full_step": 0.016, "student_fwd_bwd": 0.030, "iteration": 0.045}
    clock, calls, losses = [0.0], {}, []
    real_measure, real_loss = bench_router.measure, bench_router.iteration_loss

    def measure(fns, **kwargs):
        def charged(name, fn):
            def call():
                calls[name] = calls.get(name, 0) + 1
                fn()
                clock[0] += costs_s[name]
            return call

        return real_measure({name: charged(name, fn) for name, fn in fns.items()}, clock=lambda: clock[0], **kwargs)

    def iteration_loss(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        assert out.loss.requires_grad  # through the router logits (the model is frozen)
        losses.append(out.loss.item())
        return out

    monkeypatch.setattr(bench_router, "measure", measure)
    monkeypatch.setattr(bench_router, "iteration_loss", iteration_loss)
    row = bench_router.main(["--model", "dit", "--nfe", "4", "--batch", "2", "--repeats", "2", "--device", "cpu",
                             "--json"])
    assert json.loads(capsys.readouterr().out) == row  # --json: exactly the returned row, one line
    assert (row["model"], row["sampler"], row["nfe"], row["batch"], row["device"]) == ("dit-toy", "ddim", 4, 2, "cpu")
    assert calls == {name: 1 + 2 for name in costs_s}  # one warm-up call, then --repeats timed calls
    assert len(losses) == 3 and all(0 < loss < float("inf") for loss in losses)
    for name, cost in costs_s.items():
        assert row[f"{name}_ms"] == pytest.approx(cost * 1e3), name
        assert row[f"{name}_in_forwards"] == pytest.approx(cost / costs_s["forward"]), name


def _toy_loss(model, kind: str, seed: int = 123) -> float:
    """The training objective on a held-out batch (seed the training never draws)."""
    x0, labels = make_batch(seed, 0, 32)
    with torch.no_grad():
        if kind == "classifier":
            return F.cross_entropy(model(x0), labels).item()
        return toy_train.diffusion_loss(model, x0, labels, torch.Generator().manual_seed(0)).item()


@pytest.mark.slow
def test_toy_training_lowers_the_loss_and_writes_a_loadable_fp16_checkpoint(tmp_path, capsys):
    out = tmp_path / "classifier.pt"
    toy_train.main(["--model", "classifier", "--max-steps", "15", "--batch-size", "8", "--lr", "0.02",
                    "--out", str(out)])
    summary = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["kind"] == "classifier" and summary["steps"] == 15 and summary["lr"] == 0.02
    state = read_state_dict(out)
    assert state and all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())  # EMA, fp16
    torch.manual_seed(0)  # the initialisation training started from (--seed 0)
    initial = ToyClassifier().eval()
    trained = ToyClassifier().eval()
    trained.load_state_dict({k: v.float() for k, v in state.items()})
    before, after = _toy_loss(initial, "classifier"), _toy_loss(trained, "classifier")
    assert before > 2.0 and after < 0.6 * before, (before, after)  # ln(10) = 2.30 at chance

    # a diffusion model: two steps, the checkpoint loads into the architecture and moved off its init
    dit_out = tmp_path / "dit.pt"
    dit = toy_train.train("dit", minutes=5, max_steps=2, batch_size=2, lr=0.02, seed=0, out=dit_out)
    assert dit["steps"] == 2 and dit["final_loss"] > 0
    torch.manual_seed(0)
    initial = build_model("DiT-toy").eval()
    loaded = load_checkpoint(build_model("DiT-toy"), dit_out).eval()
    changed = [name for name, p in loaded.named_parameters()
               if not torch.equal(p, initial.get_parameter(name).half().float())]
    assert changed  # the EMA of two AdamW steps, stored in fp16
    assert _toy_loss(initial, "dit") == pytest.approx(1.0, abs=0.15)  # zero-initialised output: loss = E[eps^2]


def _toy_row(run_id, cache, fid, latency_ms, **extra):
    row = {"run_id": run_id, "status": "ok", "config.scale.name": "toy", "config.scale.features": "toy",
           "config.model.arch": "DiT-toy", "config.model.vae": "none", "config.model.default_sampler": "ddim",
           "config.sampler.name": None, "config.cache.name": cache, "config.steps": 20,
           "config.router.lam": 1e-4 if cache == "l2c" else None, "config.cache.threshold": None,
           "metrics.features": "toy", "metrics.fid": fid, "metrics.latency_ms": latency_ms,
           "metrics.speedup": 1.0, "metrics.macs_g": 10.0}
    return {**row, **extra}


@pytest.fixture
def store(tmp_path):
    for row in (_toy_row("toy-ddim", "none", 20.25, 100.0), _toy_row("toy-l2c", "l2c", 21.75, 70.0)):
        write_row(tmp_path / "results", row["run_id"], row)
    return tmp_path / "results"


def test_analysis_cli_writes_the_tables_of_the_store_and_prints_each_file(store, tmp_path, capsys):
    tables.main(["--results", str(store), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out.split()
    assert printed and sorted(printed) == sorted(str(p) for p in (tmp_path / "out").iterdir())
    table1 = (tmp_path / "out" / "table1_dit_toy_toy.md").read_text()
    assert "20.25" in table1 and "21.75" in table1  # our two rows' FID


def test_analysis_cli_reads_the_wandb_mirror_with_source_wandb(tmp_path, capsys, monkeypatch):
    wandb = pytest.importorskip("wandb")
    asked = []

    class Run:
        def __init__(self, row, state):
            self.name, self.state = row["run_id"], state
            self.config = {k.removeprefix("config."): v for k, v in row.items() if k.startswith("config.")}
            self.summary = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}

    class Api:
        def runs(self, path):
            asked.append(path)
            return [Run(_toy_row("toy-ddim", "none", 19.5, 90.0), "finished"),
                    Run(_toy_row("toy-crash", "none", 99.0, 1.0, **{"config.steps": 10}), "crashed")]

    monkeypatch.setattr(wandb, "Api", Api)
    tables.main(["--source", "wandb", "--project", "proj", "--entity", "team", "--out", str(tmp_path / "out")])
    assert asked == ["team/proj"]
    assert str(tmp_path / "out" / "table1_dit_toy_toy.md") in capsys.readouterr().out.split()
    table1 = (tmp_path / "out" / "table1_dit_toy_toy.md").read_text()
    assert "19.50" in table1 and "99.00" not in table1  # a crashed W&B run reads as failed: not tabled


def test_analysis_cli_names_a_corrupt_row_and_writes_the_rest(store, tmp_path, capsys):
    bad = store / "cut-short" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"run_id": "cut-short", "status": "o')
    tables.main(["--results", str(store), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert captured.err.startswith(f"warning: skipped: corrupt result row {bad} (") and "Traceback" not in captured.err
    table1 = (tmp_path / "out" / "table1_dit_toy_toy.md").read_text()
    assert "20.25" in table1 and "21.75" in table1  # the store's two good rows, still tabulated
    with pytest.raises(SystemExit) as info:  # a store that is not there is an error naming it
        tables.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out2")])
    assert info.value.code == 1 and f"--results {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
