"""Under torchrun (gloo, CPU): build the RISD teacher cache and run `zreward eval` (reasoning, sampled chains)
with every process taking its share; rank 0 writes what the test compares as JSON.

usage: torchrun --nproc_per_node N sharded_script.py OUT.json TEACHER_DIR TRAIN_SPLIT CACHE_DIR TEST_SPLIT EVAL_OUT
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from zreward.eval import cli as eval_cli
from zreward.eval.runner import evaluate, load_eval_data, parse_model_spec
from zreward.trainers import risd, risd_teacher
from zreward.trainers.run_utils import AcceleratorConfig, make_accelerator
from zreward.trainers.sharding import rank_world


def main() -> None:
    out, teacher, train, cache, test, eval_out = sys.argv[1:7]
    acc = make_accelerator(AcceleratorConfig(device="cpu"))
    cfg = risd.Config()
    cfg.teacher.path, cfg.teacher.samples, cfg.teacher.batch_size = teacher, 2, 3  # 8 images: chunks of 3, 3, 2
    data = cfg.data.load(train, 8)
    targets, info = risd_teacher.teacher_targets(cfg, data, data.dims, Path(cache), acc)
    data_e = load_eval_data(test, max_images=6)
    _, _, scores = evaluate([parse_model_spec(f"t={teacher}:reasoning:2")], data_e, samples=2, batch_size=2,
                            n_boot=20, seed=3, log=lambda *a: None)
    rc = eval_cli.main(["--model", f"t={teacher}:reasoning:2", "--data", test, "--out", eval_out,
                        "--max-images", "6", "--batch-size", "2", "--n-boot", "20", "--seed", "3"])
    if rank_world()[0] == 0 or rc != 0:
        sc = scores["t"]
        with open(out, "w") as f:
            json.dump({"world": acc.num_processes, "rc": rc, "computed": info["computed"],
                       "cache_sha": hashlib.sha256(open(info["cache"], "rb").read()).hexdigest(),
                       "targets": targets.tolist(), "probs": sc.probs.tolist(), "chains": sc.chains}, f)


if __name__ == "__main__":
    main()
