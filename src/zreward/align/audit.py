"""The reward-hacking audit of reward tuning: the tuned reward against judges it was not tuned on.

What is implemented: every `audit_every` steps the tuner samples fixed held-out prompts with fixed seeds and
records one row {"step", "reward", <judge keys>...}:
- "reward": the tuned reward (`scorer_reward`, the same composition as the training loss) averaged over the images;
- judges, each a callable `judge(prompts, images) -> {key: value}` (higher = better), from
  - `OracleJudge` (ShapesWorld): images are read back into scenes (`perceive.py`) and scored by the normative
    oracle; keys = the four dims and "oracle_overall" (mean-weight overall), the key the warning watches;
  - `ScorerJudge` (real pipelines): a held-out Scorer directory the user names as `[NAME=]DIR[:direct |
    :reasoning[:M]]` (another student, or the teacher in reasoning mode, M sampled chains averaged); key
    "judge:<name>" = its `overall` (its own dim weights, no uncertainty penalty).
Each row also carries, for every watched judge key, "<key>:reward_plcc": the Pearson correlation over the audit
images of the per-image reward with the judge's per-image score (judges with a `scores` method) — whether the
reward ranks *this generator's* images like the judge does. A reward trained on another image distribution can
score the generator's images near-constantly or in the wrong order; then tuning has no signal to follow (NaN when
either side is constant: null in audit.jsonl).
`hacking_warning` flags divergence: the reward rose while a watched judge key fell by more than `tol`, compared
with the previous audit or with the first one (step 0), so a slow drift that never drops `tol` between two audits
still warns. `plot_audit` draws reward and judges against the step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zreward.align.perceive import perceived_scores
from zreward.data.shapes_world.oracle import DIMS, MEAN_WEIGHTS
from zreward.eval.runner import parse_model_spec, resolve_mode
from zreward.metrics import plcc
from zreward.models.scorer import load_scorer

ORACLE_KEY = "oracle_overall"


class OracleJudge:
    """ShapesWorld: perceived scene → oracle. Watches "oracle_overall"."""

    watch = (ORACLE_KEY,)
    labels = {ORACLE_KEY: "the oracle"}

    def scores(self, prompts: list[str], images: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-image oracle scores: the four dims and the overall, each (N,)."""
        o = perceived_scores(images, prompts)  # (N, 4)
        return {**{d: o[:, j] for j, d in enumerate(DIMS)}, ORACLE_KEY: o @ np.asarray(MEAN_WEIGHTS)}

    def __call__(self, prompts: list[str], images: torch.Tensor) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self.scores(prompts, images).items()}


class ScorerJudge:
    """A held-out Scorer as judge: mean `overall` of its scores (direct, or reasoning mode with `samples` chains).

    Args:
        scorer: a Scorer (or anything with `.score(prompts, images, reasoning=, samples=, batch_size=)`).
        name: label in the audit (key "judge:<name>").  reasoning, samples: the teacher's reasoning mode.
    """

    def __init__(self, scorer, name: str, reasoning: bool = False, samples: int = 1, batch_size: int = 8):
        self.scorer, self.name = scorer, name
        self.reasoning, self.samples, self.batch_size = reasoning, samples, batch_size
        self.key = f"judge:{name}"
        self.watch = (self.key,)
        self.labels = {self.key: f"judge {name}" + (" (reasoning)" if reasoning else "")}

    def scores(self, prompts: list[str], images: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-image `overall` of the judge, (N,)."""
        out = self.scorer.score(list(prompts), images, reasoning=self.reasoning, samples=self.samples,
                                batch_size=self.batch_size)
        return {self.key: out.overall.float().numpy()}

    def __call__(self, prompts: list[str], images: torch.Tensor) -> dict[str, float]:
        return {k: float(v.mean()) for k, v in self.scores(prompts, images).items()}


def load_scorer_judges(specs: list[str], reasoning: bool = False, samples: int = 1, device: str = "cpu",
                       dtype=None) -> list[ScorerJudge]:
    """One `ScorerJudge` per spec `[NAME=]DIR[:direct | :reasoning[:M]]` (the `zreward eval --model` syntax).

    Without a suffix, a judge whose zreward.json mode is "reasoning" (a teacher) judges in reasoning mode with
    `samples` chains when `reasoning` is set, every other judge in direct mode.
    """
    judges = []
    for text in specs:
        spec = parse_model_spec(text)
        s = load_scorer(spec.path, device=device, dtype=dtype, add_level_tokens=False)
        s.model.eval()
        use_reasoning, m = resolve_mode(spec, s.config.mode, reasoning, samples)
        judges.append(ScorerJudge(s, spec.name, reasoning=use_reasoning, samples=m))
    return judges


def audit_row(step: int, prompts: list[str], images: torch.Tensor, reward: torch.Tensor, judges: list) -> dict:
    """One audit row from held-out images (N, 3, H, W) in [0, 1] and their rewards (N,): the mean reward, each judge's
    mean keys, and for a judge with per-image `scores` the reward's Pearson correlation with each watched key."""
    r = reward.detach().float().cpu().numpy()
    row = {"step": step, "reward": float(r.mean())}
    for j in judges:
        if not hasattr(j, "scores"):
            row.update(j(prompts, images))
            continue
        per = j.scores(prompts, images)
        row.update({k: float(np.mean(v)) for k, v in per.items()})
        for k in j.watch:
            c = float(plcc(r, per[k]))
            row[f"{k}:reward_plcc"] = c if np.isfinite(c) else None  # JSON null, not NaN
    return row


def hacking_warning(previous: list[dict], row: dict, tol: float, watch: tuple[str, ...] = (ORACLE_KEY,),
                    labels: dict[str, str] | None = None) -> str | None:
    """The warning for audit `row` given the earlier audits, or None.

    Args:
        previous: earlier rows (oldest first).  row: the new row.  tol: drop of a judge key that counts as "fell".
        watch: judge keys to watch (higher = better).  labels: key → name used in the message.
    """
    labels = labels or {}
    for key in watch:
        for ref, what in ((previous[-1:], "the previous audit"), (previous[:1], "the first audit")):
            if ref and row["reward"] > ref[0]["reward"] and row[key] < ref[0][key] - tol:
                r = ref[0]
                return (f"step {row['step']}: since {what} (step {r['step']}) the reward rose {r['reward']:.4f} -> "
                        f"{row['reward']:.4f} while {labels.get(key, key)} fell {r[key]:.3f} -> {row[key]:.3f} "
                        f"(possible reward hacking)")
    return None


def plot_audit(rows: list[dict], path: Path, watch: tuple[str, ...] = (ORACLE_KEY,)) -> Path:
    """Reward (left axis) and the watched judge keys (right axis) vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(st, [r["reward"] for r in rows], "o-", color="tab:blue", label="reward (scorer)")
    ax.set_xlabel("tuning step")
    ax.set_ylabel("reward", color="tab:blue")
    ax2 = ax.twinx()
    for key, style in zip(watch, ("s--", "^--", "v--", "d--")):
        ax2.plot(st, [r[key] for r in rows], style, label=key)
    ax2.set_ylabel("held-out judges" if watch != (ORACLE_KEY,) else "ShapesWorld oracle (perceived)")
    if watch:
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_title("hacking audit: held-out prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
