"""`run_torchrun`: launch a script under `torchrun --standalone --nproc_per_node N` for multi-process tests.

Reusable by trainer tests: write a script that trains with `make_accelerator` (gloo on CPU), have rank 0 write
its results (losses, ...) as JSON to a path passed in `args`, run it with nproc=1 and nproc=2 and compare.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_torchrun(script: str | Path, nproc: int, args: list[str], *, timeout: float = 120,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `script` with `nproc` processes (CPU, gloo) and return the finished process.

    One thread per process (2 cores here), no progress bars. `--standalone` picks a free rendezvous port, so
    parallel test runs do not collide.

    Raises:
        AssertionError: non-zero exit, with the command and the tail of stdout/stderr.
        subprocess.TimeoutExpired: after `timeout` seconds (a hung collective, e.g. ranks that disagree).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "ZREWARD_NO_PROGRESS": "1",
                "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout ---\n"
                             f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc
