"""Run one trainer under torchrun (gloo, CPU) and have rank 0 write its metrics and final weights' path as JSON.

usage: torchrun --nproc_per_node N fsdp_script.py OUT.json METHOD [--head-rows R] [--sigkill-at-save S]
       [key.path=value ...]

METHOD is a `zreward.trainers` module with `Config` and `train` (sft, gdso, ...); the overrides are its config's
dotlist. FSDP2 is on when the environment says so, as `accelerate launch --config_file configs/accelerate/fsdp.yaml`
would set it (`fsdp_env` in test_fsdp.py). `--head-rows R` makes the chunked output head
(`zreward.models.logprobs`) take R rows per call, as a 248k vocabulary would: ranks with different numbers of
chains then call the head a different number of times. `--sigkill-at-save S` kills the whole job with SIGKILL (every
rank, then the torchrun agent) in the step-S sharded save, after every rank wrote its shard and before rank 0
renames the directory into place: the worst moment for a kill -9.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import sys

import torch

from zreward.models import logprobs
from zreward.trainers import loop, sharded_checkpoint
from zreward.trainers.config import load_config
from zreward.trainers.run_utils import end_distributed, read_metrics


def _sigkill_at_save(kill_step: int) -> None:
    save, rename = loop.save_sharded_checkpoint, sharded_checkpoint.replace_dir
    pids: list[int] = []

    def save_and_learn_pids(ckpt_root, step, *args, **kw):
        if step == kill_step:  # collective: every rank is here
            mine = torch.tensor([os.getpid()])
            every = [torch.zeros_like(mine) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(every, mine)
            pids[:] = [int(t.item()) for t in every]
        return save(ckpt_root, step, *args, **kw)

    def kill_before_rename(tmp, target):
        if pids:
            for pid in [p for p in pids if p != os.getpid()] + [os.getppid(), os.getpid()]:
                os.kill(pid, signal.SIGKILL)
        return rename(tmp, target)

    loop.save_sharded_checkpoint, sharded_checkpoint.replace_dir = save_and_learn_pids, kill_before_rename


def main() -> None:
    out, method, *over = sys.argv[1:]
    if over[:1] == ["--head-rows"]:
        rows, over = int(over[1]), over[2:]
        logprobs.MAX_CHUNK_ELEMS = rows * 768  # the tiny models' vocabulary
    if over[:1] == ["--sigkill-at-save"]:
        _sigkill_at_save(int(over[1]))
        over = over[2:]
    mod = importlib.import_module(f"zreward.trainers.{method}")
    cfg = load_config(mod.Config, None, ["accelerator.device=cpu", "run.progress=false", *over])
    final = mod.train(cfg)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        with open(out, "w") as f:
            json.dump({"world": world, "final": str(final),
                       "metrics": read_metrics(f"{cfg.run.output_dir}/metrics.jsonl")}, f)
    end_distributed()


if __name__ == "__main__":
    main()
