"""Run `zreward.trainers.sft.train` under torchrun (gloo, CPU) and have rank 0 write the logged losses as JSON.

usage: torchrun --nproc_per_node N sft_ddp_script.py OUT.json MODEL_DIR TRAIN_SPLIT RUN_DIR STEPS PROMPTS_PER_BATCH
"""
from __future__ import annotations

import json
import sys

import torch

from zreward.trainers import sft
from zreward.trainers.run_utils import end_distributed, read_metrics


def main() -> None:
    out, model, train, run_dir, steps, ppb = sys.argv[1:7]
    cfg = sft.Config()
    cfg.model.init_from, cfg.data.train = model, train
    cfg.data.prompts_per_batch = int(ppb)
    cfg.accelerator.device = "cpu"
    cfg.run.output_dir, cfg.run.max_steps, cfg.run.progress, cfg.run.resume = run_dir, int(steps), False, "never"
    cfg.optim.lr = 3e-3
    cfg.sft.pair_weight = 0.5  # the pairwise term's normaliser must be global too
    sft.train(cfg)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        logs = read_metrics(f"{run_dir}/metrics.jsonl")
        with open(out, "w") as f:
            json.dump({"world": int(torch.distributed.get_world_size()) if torch.distributed.is_initialized() else 1,
                       "loss": [e["loss"] for e in logs], "kl": [e["kl"] for e in logs]}, f)
    end_distributed()


if __name__ == "__main__":
    main()
