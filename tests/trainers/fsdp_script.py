"""Run one trainer under torchrun (gloo, CPU) and have rank 0 write its metrics and final weights' path as JSON.

usage: torchrun --nproc_per_node N fsdp_script.py OUT.json METHOD [--head-rows R] [key.path=value ...]

METHOD is a `zreward.trainers` module with `Config` and `train` (sft, gdso, ...); the overrides are its config's
dotlist. FSDP2 is on when the environment says so, as `accelerate launch --config_file configs/accelerate/fsdp.yaml`
would set it (`fsdp_env` in test_fsdp.py). `--head-rows R` makes the chunked output head
(`zreward.models.logprobs`) take R rows per call, as a 248k vocabulary would: ranks with different numbers of
chains then call the head a different number of times.
"""
from __future__ import annotations

import importlib
import json
import sys

import torch

from zreward.models import logprobs
from zreward.trainers.config import load_config
from zreward.trainers.run_utils import end_distributed, read_metrics


def main() -> None:
    out, method, *over = sys.argv[1:]
    if over[:1] == ["--head-rows"]:
        rows, over = int(over[1]), over[2:]
        logprobs.MAX_CHUNK_ELEMS = rows * 768  # the tiny models' vocabulary
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
