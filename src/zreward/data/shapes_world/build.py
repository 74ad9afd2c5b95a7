"""ShapesWorld dataset builder: prompts -> candidate scenes -> images, oracle, simulated labels -> split dirs + card.

What `build_world` produces (all deterministic given the settings, independent of the number of workers):
- splits train / val / test / ood with `prompts`, and ceil(prompts / 8) (at least 2) prompts for each of val, test
  and ood; prompt i of split s uses `default_rng([seed, s, i])` (disjoint seed streams per split) for its spec,
  candidates and render seeds, and `default_rng([seed, s, i, 1])` for the rater noise;
- held-out (color, shape) combos `HELD_OUT` never appear in train/val/test prompts *or images*; every ood prompt
  uses at least one of them;
- per prompt `candidates` images with ids `p{i:06d}_c{j}`; labels for all 4 dims (hist over the 9 levels as
  counts, mos, population std, the ratings of raters r0..r{R-1} in order), rationales per dim, prompt_spec,
  scene (with its render `seed`), meta {"oracle": true scores, "mutations": kinds, "raters": ids};
- pairs: every candidate pair of a prompt with dim "overall" (label from the rater votes, votes stored), and when
  `dim_pairs` the same pairs per dimension (a rater votes for the higher rating on that dim, tie when equal);
- `card.json` (settings, counts, ceilings, MOS/oracle histograms, held-out combos, rater pool, build seconds),
  `card.md` and `hist.png` (per-dimension MOS histograms per split).
The whole dataset is written into a temporary sibling directory and renamed into place at the end.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zreward.atomic import make_tmp_dir, prepare_target, replace_dir
from zreward.data.records import IMAGES_DIR, DatasetInfo, DimLabel, ImageRecord, PairRecord
from zreward.data.split_writer import SplitWriter
from zreward.data.shapes_world.annotators import RaterPool, ceiling, histograms, judge_pairs
from zreward.data.shapes_world.oracle import DIMS, MEAN_WEIGHTS, oracle_facts
from zreward.data.shapes_world.prompts import sample_spec, spec_to_text
from zreward.data.shapes_world.rationales import rationales
from zreward.data.shapes_world.render import render_png
from zreward.data.shapes_world.sampler import sample_candidates
from zreward.data.shapes_world.scene import COLORS, SHAPES

SPLITS: tuple[str, ...] = ("train", "val", "test", "ood")
HELD_OUT: tuple[tuple[str, str], ...] = (("red", "triangle"), ("green", "circle"), ("blue", "square"),
                                         ("yellow", "circle"))
ALL_COMBOS: list[tuple[str, str]] = [(c, s) for c in COLORS for s in SHAPES]
ID_COMBOS: list[tuple[str, str]] = [c for c in ALL_COMBOS if c not in HELD_OUT]
CHUNK = 25  # prompts per worker task
HIST_EDGES = np.arange(0.75, 5.26, 0.5)  # 9 bins centred on the levels 1.0 .. 5.0


@dataclass
class WorldConfig:
    """Settings of one build (the defaults are the default demo dataset)."""

    prompts: int = 2000  # train prompts; val/test/ood get ceil(prompts/8) each (at least 2)
    candidates: int = 4  # images per prompt
    canvas: int = 64  # px
    raters: int = 7
    seed: int = 0
    dim_pairs: bool = True  # also write per-dimension pairs

    def split_prompts(self) -> dict[str, int]:
        small = max(2, math.ceil(self.prompts / 8))
        return {"train": self.prompts, "val": small, "test": small, "ood": small}


def image_labels(ratings: np.ndarray) -> list[dict[str, DimLabel]]:
    """(K, R, 4) ratings of K images → each image's labels per dimension: histogram over the levels, MOS and
    population std (rounded to 4 decimals) and the raw ratings — the one label record of a rated ShapesWorld image
    (`world build`, `zreward gen label`)."""
    hist = histograms(ratings)  # (K, 4, 9)
    mos, std = ratings.mean(1), ratings.std(1)  # (K, 4)
    return [{d: DimLabel(hist=hist[j, k].tolist(), mos=round(float(mos[j, k]), 4), std=round(float(std[j, k]), 4),
                         ratings=ratings[j, :, k].tolist()) for k, d in enumerate(DIMS)} for j in range(len(ratings))]


def _prompt_item(cfg: WorldConfig, pool: RaterPool, split: str, pi: int) -> dict:
    """Everything for prompt `pi` of `split`: images (png, record fields) and pairs."""
    si = SPLITS.index(split)
    rng = np.random.default_rng([cfg.seed, si, pi])
    ood = split == "ood"
    spec = sample_spec(rng, ALL_COMBOS if ood else ID_COMBOS, must_use=list(HELD_OUT) if ood else None)
    text = spec_to_text(spec)
    cands = sample_candidates(spec, cfg.candidates, cfg.canvas, rng, ALL_COMBOS if ood else ID_COMBOS)
    facts = [oracle_facts(c.scene, spec) for c in cands]
    true = np.array([[f.scores[d] for d in DIMS] for f in facts])  # (K, 4)
    ratings = pool.rate(true, np.random.default_rng([cfg.seed, si, pi, 1]))  # (K, R, 4)
    image_label = image_labels(ratings)
    images = []
    for j, (c, f) in enumerate(zip(cands, facts)):
        scene = dict(c.scene, seed=int(rng.integers(2**31)))
        images.append({"id": f"p{pi:06d}_c{j}", "scene": scene, "png": render_png(scene, scene["seed"]),
                       "kinds": c.kinds, "rationales": rationales(f, c.scene), "oracle": dict(f.scores),
                       "labels": image_label[j]})
    ia, ib = np.triu_indices(cfg.candidates, 1)  # all unordered candidate pairs, (P,)
    pairs = []
    dims = ["overall"] + (list(DIMS) if cfg.dim_pairs else [])
    for dim in dims:
        pair_label, counts = judge_pairs(pool, ratings, ia, ib, dim)
        for p in range(len(ia)):
            pairs.append((images[ia[p]]["id"], images[ib[p]]["id"], dim, pair_label[p],
                          {"a": int(counts[p, 0]), "b": int(counts[p, 1]), "tie": int(counts[p, 2])}))
    return {"text": text, "spec": spec, "images": images, "pairs": pairs, "true": true, "mos": ratings.mean(1),
            "ia": ia, "ib": ib}


def _chunk_worker(args: tuple) -> list[dict]:
    """Build prompts start..stop-1 and write their PNGs into `image_dir` (file creation is the slowest part of a
    build, so it happens in the workers, in parallel); returns the items without the PNG bytes."""
    cfg, pool, split, start, stop, image_dir = args
    items = [_prompt_item(cfg, pool, split, pi) for pi in range(start, stop)]
    for item in items:
        for im in item["images"]:
            (Path(image_dir) / f"{im['id']}.png").write_bytes(im.pop("png"))
    return items


def _write_plot(path: Path, mos_by_split: dict[str, np.ndarray]) -> None:
    """Per-dimension MOS histograms (fraction of images per level bin), one line per split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: leaves the global backend alone
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(DIMS), 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(DIMS))
    for k, (ax, dim) in enumerate(zip(axes, DIMS)):
        for split, mos in mos_by_split.items():
            h, _ = np.histogram(mos[:, k], bins=HIST_EDGES)
            ax.plot(HIST_EDGES[:-1] + 0.25, h / max(1, h.sum()), marker="o", label=split)
        ax.set_title(f"{dim} (MOS)")
        ax.set_xlabel("score")
        ax.set_xticks(np.arange(1, 5.01, 0.5))
    axes[0].set_ylabel("fraction of images")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _card_md(card: dict) -> str:
    lines = ["# ShapesWorld dataset card", "",
             "Procedural text-to-image preference world with exact oracle scores and simulated raters "
             "(spec: docs/shapes-world.md in the zreward repository).", "",
             f"Settings: `{json.dumps(card['settings'])}`  ", f"Build time: {card['build_seconds']:.1f} s wall, "
             f"{card['build_cpu_seconds']:.1f} s CPU (all processes), {card['workers']} worker process(es).", "",
             "| split | prompts | images | pairs (overall) | human ties | annotator ceiling | oracle ties among "
             "non-tie pairs |", "|---|---|---|---|---|---|---|"]
    for s, c in card["splits"].items():
        lines.append(f"| {s} | {c['prompts']} | {c['images']} | {c['pairs_overall']} | {c['ties_overall']} | "
                     f"{card['ceiling'][s]:.3f} | {c['oracle_ties_on_nontie']} |")
    lines += ["", "Annotator ceiling = accuracy of the oracle's mean-weight overall (0.4, 0.2, 0.2, 0.2) on the "
              "non-tie human pairs (oracle ties count as half right); target band at the default settings: "
              "0.85-0.92 on test.", "",
              "Pairs: every candidate pair of a prompt, dim `overall` (weighted rater votes) and, unless built with "
              "--no-dim-pairs, the same pairs per dimension.", "",
              f"Held-out (color, shape) combos (ood prompts only): {card['held_out_combos']}", "",
              "![per-dimension MOS histograms](hist.png)", "", "MOS histograms (bins centred on the 9 levels):", ""]
    for s, h in card["mos_hist"].items():
        lines.append(f"- {s}: " + "; ".join(f"{d} {h[d]}" for d in DIMS))
    lines += ["", "Mutation mix (candidates per kind, all splits): "
              + ", ".join(f"{k} {n}" for k, n in card["mutations"].items()), ""]
    return "\n".join(lines)


def _write_split(split_dir: Path, info: DatasetInfo, cfg: WorldConfig, pool: RaterPool, split: str, n: int,
                 executor, kinds: Counter) -> dict:
    """Build and write one split; returns its statistics (counts, ceiling, MOS and oracle arrays)."""
    trues, moss, ta, tb, labels = [], [], [], [], []
    raters = [f"r{r}" for r in range(pool.n)]
    with SplitWriter(split_dir, info) as w:
        tasks = [(cfg, pool, split, s, min(n, s + CHUNK), str(w.tmp / IMAGES_DIR)) for s in range(0, n, CHUNK)]
        for chunk in executor.imap(_chunk_worker, tasks) if executor else map(_chunk_worker, tasks):
            for item in chunk:
                for im in item["images"]:
                    kinds.update(im["kinds"])
                    w.add_image(ImageRecord(  # the worker already wrote the PNG
                        id=im["id"], prompt=item["text"], image=f"{IMAGES_DIR}/{im['id']}.png",
                        prompt_spec=item["spec"], rationales=im["rationales"], scene=im["scene"],
                        labels=im["labels"],
                        meta={"oracle": im["oracle"], "mutations": im["kinds"], "raters": raters}))
                for a, b, dim, lab, votes in item["pairs"]:
                    w.add_pair(PairRecord(a=a, b=b, dim=dim, label=lab, votes=votes))
                    if dim == "overall":
                        labels.append(lab)
                trues.append(item["true"])
                moss.append(item["mos"])
                ta.append(item["true"][item["ia"]])
                tb.append(item["true"][item["ib"]])
    true_a, true_b = np.concatenate(ta), np.concatenate(tb)
    acc, _ = ceiling(true_a, true_b, labels)
    nontie = np.asarray(labels) != "tie"
    oracle_tie = np.round((true_a - true_b) @ np.asarray(MEAN_WEIGHTS), 9) == 0
    return {"prompts": n, "images": n * cfg.candidates, "pairs_total": w.n_pairs, "pairs_overall": len(labels),
            "ties_overall": int((~nontie).sum()), "oracle_ties_on_nontie": int((oracle_tie & nontie).sum()),
            "ceiling": acc, "mos": np.concatenate(moss), "true": np.concatenate(trues)}


def build_world(out_dir: str | os.PathLike, *, prompts: int = 2000, candidates: int = 4, canvas: int = 64,
                raters: int = 7, seed: int = 0, overwrite: bool = False, dim_pairs: bool = True,
                workers: int | None = None) -> Path:
    """Build a ShapesWorld dataset directory (see the module docstring for its contents).

    Args:
        out_dir: target directory; must be absent or empty unless `overwrite`.
        prompts, candidates, canvas, raters, seed, dim_pairs: see `WorldConfig`.
        workers: worker processes (default: usable CPUs); results do not depend on it.
    Returns:
        The dataset directory.
    """
    t0, c0 = time.perf_counter(), os.times()
    cfg = WorldConfig(prompts=prompts, candidates=candidates, canvas=canvas, raters=raters, seed=seed,
                      dim_pairs=dim_pairs)
    if prompts < 1 or candidates < 2 or raters < 1:
        raise ValueError(f"expected prompts >= 1, candidates >= 2, raters >= 1, got prompts={prompts}, "
                         f"candidates={candidates}, raters={raters}")
    if not 32 <= canvas <= 256:
        raise ValueError(f"canvas: expected 32..256 px, got {canvas}")
    out = Path(out_dir)
    prepare_target(out, overwrite)
    pool = RaterPool.create(raters, seed)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    info = DatasetInfo(name="shapes_world", source="zreward ShapesWorld (procedural, simulated raters)",
                       extra={"settings": asdict(cfg), "held_out_combos": [list(c) for c in HELD_OUT]})
    tmp = make_tmp_dir(out)
    kinds: Counter = Counter()
    executor = None
    try:
        if workers > 1:
            executor = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers)
        stats = {split: _write_split(tmp / split, info, cfg, pool, split, n, executor, kinds)
                 for split, n in cfg.split_prompts().items()}
        if executor:
            executor.close()
            executor.join()
            executor = None
        _write_plot(tmp / "hist.png", {s: st["mos"] for s, st in stats.items()})
        card = {
            "name": "shapes_world", "settings": asdict(cfg), "workers": workers,
            "held_out_combos": [list(c) for c in HELD_OUT],
            "ceiling": {s: round(st["ceiling"], 4) for s, st in stats.items()},
            "splits": {s: {k: v for k, v in st.items() if k not in ("mos", "true", "ceiling")}
                       for s, st in stats.items()},
            "mos_hist": {s: {d: np.histogram(st["mos"][:, k], bins=HIST_EDGES)[0].tolist()
                             for k, d in enumerate(DIMS)} for s, st in stats.items()},
            "oracle_hist": {s: {d: np.histogram(st["true"][:, k], bins=HIST_EDGES)[0].tolist()
                                for k, d in enumerate(DIMS)} for s, st in stats.items()},
            "mutations": dict(kinds.most_common()),
            "raters": pool.to_json(),
            "levels": [1.0 + 0.5 * i for i in range(9)],
        }
        card["build_seconds"] = round(time.perf_counter() - t0, 2)
        c1 = os.times()  # CPU time of this process and its joined workers: meaningful even on a busy machine
        card["build_cpu_seconds"] = round(sum(getattr(c1, k) - getattr(c0, k) for k in
                                              ("user", "system", "children_user", "children_system")), 2)
        (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
        (tmp / "card.md").write_text(_card_md(card), encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        if executor:
            executor.terminate()  # do not wait for queued chunks
            executor.join()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
