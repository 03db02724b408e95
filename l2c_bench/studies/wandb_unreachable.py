"""What an unreachable W&B server costs a sweep (docs/faults.md): one toy point and a two-point
sweep with `tracker.mode=online` against a local server that accepts connections and never
answers (a compute node's firewall), beside the same runs with `tracker=none`.

    python -m l2c_bench.studies.wandb_unreachable              # default tracker.init_timeout_s
    python -m l2c_bench.studies.wandb_unreachable -- tracker.init_timeout_s=5
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

POINT = ["cache=none", "metrics.converged_nfe=0"]  # the toy DiT at NFE 20, uncached


def timed(env: dict, results: str, *overrides: str) -> tuple[float, int, str]:
    """(seconds, exit code, output) of one `python -m l2c_bench.run` command."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "l2c_bench.run", *overrides, f"results_dir={results}", *POINT],
                          capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> None:
    extra = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # the kernel completes the handshakes; nobody ever answers
    env = {**os.environ, "WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}"}
    cases = [("one point, tracker=none", ["tracker=none"]), ("one point, online, W&B unreachable", ["tracker.mode=online"]),
             ("two points, tracker=none", ["-m", "seed=0,1", "tracker=none"]),
             ("two points, online, W&B unreachable", ["-m", "seed=0,1", "tracker.mode=online"])]
    with tempfile.TemporaryDirectory() as scratch:
        for k, (label, overrides) in enumerate(cases):
            seconds, code, output = timed(env, os.path.join(scratch, str(k)), *overrides, *extra)
            print(f"{label:<38} {seconds:6.1f} s  exit {code}  waits {output.count('W&B unreachable (')}  "
                  f"offline at once {output.count('unreachable earlier')}", flush=True)
    server.close()


if __name__ == "__main__":
    main()
