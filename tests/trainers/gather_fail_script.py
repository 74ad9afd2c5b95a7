"""Under torchrun (gloo, CPU): rank 1's share raises; every rank must raise at once (not wait out the timeout).
Each rank writes what it raised to OUT_DIR/rank<r>.txt.

usage: torchrun --nproc_per_node 2 gather_fail_script.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from zreward.trainers.sharding import all_gather_objects, run_and_gather


def share(rank: int) -> dict:
    if rank == 1:
        raise ValueError("teacher has no dims ['realism']")
    return {0: "ok"}


def main() -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    assert all_gather_objects(rank * 10, 60, "warm") == [0, 10]
    try:
        run_and_gather(lambda: share(rank), 60, "risd teacher targets")
        msg = "no error"
    except Exception as e:  # noqa: BLE001 - the test reads what each rank raised
        msg = f"{type(e).__name__}: {e}"
    Path(sys.argv[1], f"rank{rank}.txt").write_text(msg)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
