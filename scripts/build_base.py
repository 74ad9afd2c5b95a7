"""Build (or continue building) the base VLM that ships in zreward/models/base/, and write its model card.

    python scripts/build_base.py [--root runs/base] [--steps N] [--ship]

1. `zreward world build --out ROOT/world --prompts 8000 --seed 424242` (unlabelled images for pretraining: only the
   train split's images and scene captions are read; its test split measures the perception);
2. `zreward model init --family qwen2_vl --preset 1m --seed 424242 --out ROOT/init`;
3. `zreward train caption --config configs/caption/base.yaml ...` up to `--steps` (default: the config's), resuming
   exactly from ROOT/run's latest checkpoint — run it in pieces;
4. with `--ship`: `zreward eval perception` of ROOT/run/final on 1,000 images of ROOT/world/test, then the Scorer
   files, card.json and MODEL_CARD.md are written to src/zreward/models/base/.
Steps 1–2 are skipped when their output exists. Every command is printed before it runs.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED, PROMPTS, FAMILY, PRESET = 424242, 8000, "qwen2_vl", "1m"
PERCEPTION_IMAGES = 1000
SHIP = REPO / "src" / "zreward" / "models" / "base"
SCORER_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "preprocessor_config.json", "zreward.json")


def run(cmd: list[str]) -> None:
    """Print and run a `zreward ...` command with this Python (no activated environment needed)."""
    print("+ " + shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "zreward.cli", *cmd[1:]], check=True)


def train_command(root: Path, steps: int | None) -> list[str]:
    cmd = ["zreward", "train", "caption", "--config", "configs/caption/base.yaml", f"model.init_from={root}/init",
           f"data.train={root}/world/train", f"data.val={root}/world/val", f"run.output_dir={root}/run"]
    return cmd + ([f"run.max_steps={steps}"] if steps else [])


def wall_seconds(metrics: Path) -> tuple[int, float]:
    """(last step, summed step times in s) of a run's metrics.jsonl (each resumed piece appends to it)."""
    steps = {}
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        if "step_time" in m:
            steps[m["step"]] = m["step_time"]  # a resumed piece may repeat steps after the last checkpoint
    return max(steps), sum(steps.values())


def write_card(root: Path, steps: int | None, perception: dict, train_commit: str | None = None) -> dict:
    last, wall = wall_seconds(root / "run" / "metrics.jsonl")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    train_commit = train_commit or commit
    card = {"family": FAMILY, "preset": PRESET, "init_seed": SEED, "world_seed": SEED, "world_prompts": PROMPTS,
            "train_images": PROMPTS * 4, "steps": last, "images_per_step": 32, "train_seconds": round(wall, 1),
            "commit": commit, "train_commit": train_commit,
            "commands": [f"zreward world build --out {root}/world --prompts {PROMPTS} --seed {SEED}",
                         f"zreward model init --family {FAMILY} --preset {PRESET} --seed {SEED} --out {root}/init",
                         shlex.join(train_command(root, steps or last))],
            "perception": {"split": f"world seed {SEED}, test split, first {perception['n']} images",
                           **perception}}
    (SHIP / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    acc, base, unc, nun = (perception[k] for k in ("accuracy", "baseline", "accuracy_uncommon", "n_uncommon"))
    rows = "\n".join(f"| {k} | {100 * acc[k]:.1f} | {100 * base[k]:.1f} | "
                     + (f"{100 * unc[k]:.1f} ({nun[k]})" if unc[k] is not None else "–") + " |" for k in acc)
    (SHIP / "MODEL_CARD.md").write_text(f"""# zreward base VLM (ShapesWorld, {FAMILY} `{PRESET}`)

The embedded stand-in for "a pretrained Qwen3.5": a {FAMILY} model of the `{PRESET}` preset
(`zreward.models.tiny`), trained from random weights by captioning unlabelled ShapesWorld images
(`zreward train caption`: next-token cross-entropy on the scene caption, no labels, prompts or scores). Every
reward method of `zreward demo` starts from a copy of it (`zreward model init --from base --out DIR`).

- Data: the train split of a ShapesWorld built from seed {SEED} with {PROMPTS} prompts ({PROMPTS * 4} images, 64 px);
  the world builder keeps the held-out ood (color, shape) combinations out of it. No demo seed (0, 1, 2, ... and
  their pretraining worlds 1000, 1001, ...) is {SEED}.
- Training: {last} steps × 32 images, AdamW lr 1e-3 (50 warm-up steps, then constant), summed step time
  {wall / 3600:.2f} h on a 2-core CPU (one thread, other work running beside it). Trained by the code of commit
  {train_commit[:12]}; exported and measured at commit {commit[:12]}.
- Commands (run by `python scripts/build_base.py --ship`):

```
{chr(10).join(card["commands"])}
```

## Perception (greedy captions of {perception['n']} held-out images: the test split of the same world)

`zreward eval perception --model DIR --data {root}/world/test --max-images {PERCEPTION_IMAGES}`; facts as defined in
`zreward.eval.perception` (graded facts by severity band). Baseline = always answering the most common value;
"uncommon" = the accuracy on the images whose true value is not the most common one (their number in brackets).
Captions that parse: {100 * perception['parsed']:.1f}%.

| fact | accuracy % | baseline % | uncommon values % (n) |
|---|---|---|---|
{rows}

`tests/models/test_shipped_base.py` re-checks these figures on freshly sampled images.
""")
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "base")
    ap.add_argument("--steps", type=int, default=None, help="train up to this step (default: the config's)")
    ap.add_argument("--ship", action="store_true", help="measure the perception and write src/zreward/models/base/")
    ap.add_argument("--train-commit", default=None, help="the commit whose code ran the training (default: HEAD)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not (root / "world" / "card.json").is_file():
        run(["zreward", "world", "build", "--out", f"{root}/world", "--prompts", str(PROMPTS), "--seed", str(SEED),
             "--overwrite"])
    if not (root / "init" / "model.safetensors").is_file():
        run(["zreward", "model", "init", "--family", FAMILY, "--preset", PRESET, "--seed", str(SEED), "--out",
             f"{root}/init"])
    run(train_command(root, args.steps))
    if args.ship:
        out = root / "perception.json"
        run(["zreward", "eval", "perception", "--model", f"{root}/run/final", "--data", f"{root}/world/test",
             "--max-images", str(PERCEPTION_IMAGES), "--out", str(out)])
        SHIP.mkdir(parents=True, exist_ok=True)
        for name in SCORER_FILES:
            shutil.copy2(root / "run" / "final" / name, SHIP / name)
        card = write_card(root, args.steps, json.loads(out.read_text())["metrics"], args.train_commit)
        print(json.dumps(card["perception"]["accuracy"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
