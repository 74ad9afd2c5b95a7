"""A tiny MLP trained under torchrun with the trainer helpers, following the loop in run_utils' docstring.

What the tests check with it: the same global batch on 1 or 2 processes gives the same losses (each rank takes
its slice via `batch_indices`, DDP through `make_accelerator`); a NaN seen by one rank makes all ranks skip
(`NonFiniteGuard` agrees across ranks); a 2-process run resumed from a checkpoint continues bitwise exactly,
per-rank dropout RNG included (`gather_rng_states` into rank 0's checkpoint, each rank restores its own).
Rank 0 writes {"world", "losses", "skipped", "params"} as JSON to OUT.

usage: torchrun --nproc_per_node N ddp_mlp_script.py OUT.json RUN_DIR [--steps K] [--bad-step S]
       [--dropout P] [--save-every E] [--resume auto|never]
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from zreward.trainers.checkpoint import gather_rng_states, load_checkpoint, save_checkpoint
from zreward.trainers.guard import NonFiniteGuard
from zreward.trainers.run_utils import (AcceleratorConfig, MetricsLogger, batch_indices,
                                        end_distributed, make_accelerator, prepare_run_dir, seed_everything)

GLOBAL_BATCH, N_ITEMS, SEED = 8, 64, 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("run_dir")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--bad-step", type=int, default=-1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--save-every", type=int, default=0)
    ap.add_argument("--resume", default="never")
    args = ap.parse_args()

    acc = make_accelerator(AcceleratorConfig(device="cpu"))
    rank, world = acc.process_index, acc.num_processes
    run, ckpt = prepare_run_dir(args.run_dir, resume=args.resume, overwrite=True, is_main=acc.is_main_process)
    g = torch.Generator().manual_seed(123)
    xs = torch.randn(N_ITEMS, 6, generator=g)
    ys = (xs @ torch.randn(6, 1, generator=g)).tanh()
    seed_everything(SEED, 0)  # same initial weights everywhere
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(args.dropout), nn.Linear(32, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    guard, start = NonFiniteGuard(max_skips=1), 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, rank=rank)
        guard.load_state_dict(state.extra["guard"])
        start = state.step
    else:
        seed_everything(SEED, rank)  # per-rank dropout masks
    model, opt = acc.prepare(model, opt)
    log = MetricsLogger(run.metrics, resume_step=start if ckpt else None, enabled=acc.is_main_process)
    model.train()
    for step in range(start, args.steps):
        idx = batch_indices(N_ITEMS, GLOBAL_BATCH, step, SEED, rank=rank, world_size=world)
        loss = ((model(xs[idx]) - ys[idx]) ** 2).mean()
        if step == args.bad_step and rank == world - 1:
            loss = loss * float("nan")  # only the last rank sees it: the guard must make all ranks skip
        global_loss = acc.reduce(loss.detach(), reduction="mean")
        if guard.check(step, loss):  # before backward: one rank skipping DDP's all-reduce alone would hang
            acc.backward(loss)
            opt.step()
            sched.step()
        opt.zero_grad()
        log.log(step + 1, {"loss": global_loss, "lr": sched.get_last_lr()[0]})
        if (args.save_every and (step + 1) % args.save_every == 0) or step + 1 == args.steps:
            rng = gather_rng_states()  # collective
            if acc.is_main_process:
                save_checkpoint(run.checkpoints, step + 1, acc.unwrap_model(model).state_dict(), optimizer=opt,
                                scheduler=sched, rng_states=rng, extra={"guard": guard.state_dict()})
            acc.wait_for_everyone()
    log.close()
    if acc.is_main_process:
        params = [v.flatten().tolist() for v in acc.unwrap_model(model).state_dict().values()]
        losses = [json.loads(line)["loss"] for line in open(run.metrics)]
        with open(args.out, "w") as f:
            json.dump({"world": world, "losses": losses, "skipped": guard.total, "params": params}, f)
    end_distributed()


if __name__ == "__main__":
    main()
