"""`zreward gen label`: a labelled ShapesWorld split of a generator's own images.

A reward model ranks only the images it was trained on: the demo's reward models, trained on the world's rendered
candidates, order the tiny generator's images no better than chance (README, "Reward-guided generation"). Real
reward models are trained on human ratings of generator outputs; this is the ShapesWorld stand-in. For each prompt
of a world split, the generator draws `per_prompt` images (one seed each); every image is read back into a scene by
`zreward.align.perceive` (the same perception the GSB judge uses), scored by the oracle, rated by the world's own
simulated raters (`RaterPool`, the world's seed), and written as a canonical split (`docs/records.md`): label
histograms, MOS, ratings, the rationales of the perceived scene (so a reasoning teacher can train on it), and
within-prompt pairs (overall, and per dimension when the world has them), as `zreward world build` writes its
candidates (records carry no `prompt_spec`: the oracle parses the prompt text).

Images are stored at the world's canvas size (bilinear, the resize `gen tune` applies before scoring); perception
reads the generator's native pixels, as the GSB judge does. Everything is a function of (generator, world, split,
seed): image j of prompt i of split s has generator seed `generator_seed(seed, s, i, j)` and rating noise
`default_rng([seed, s, i, 2])`, so splits never share a stream. The split is written atomically (`SplitWriter`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.align.generator import load_generator
from zreward.align.perceive import PerceiveConfig, perceive_scene
from zreward.align.tune import prompts_of
from zreward.data.records import DatasetInfo, ImageRecord, PairRecord
from zreward.data.shapes_world.annotators import RaterPool, judge_pairs
from zreward.data.shapes_world.build import SPLITS, image_labels
from zreward.data.shapes_world.oracle import DIMS, oracle_facts
from zreward.data.shapes_world.rationales import rationales
from zreward.data.shapes_world.render import png_bytes
from zreward.data.split_writer import SplitWriter

__all__ = ["LabelConfig", "label_generator"]


@dataclass
class LabelConfig:
    """What `label_generator` draws and how it is rated."""

    generator: str
    data: str
    out: str
    split: str = "train"
    prompts: int | None = None  # the first N distinct prompts of the split (None: all)
    per_prompt: int = 4
    seed: int = 0
    batch_size: int = 64
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split (--split): expected one of {list(SPLITS)}, got {self.split!r}")
        if self.per_prompt < 2:
            raise ValueError(f"per_prompt (--per-prompt): expected >= 2 (within-prompt pairs need two images), "
                             f"got {self.per_prompt}")
        if self.prompts is not None and self.prompts < 1:
            raise ValueError(f"prompts (--prompts): expected a positive count, got {self.prompts}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        out = Path(self.out).resolve()
        data = Path(self.data).resolve()
        if out in (Path(self.generator).resolve(), data, *(data / s for s in SPLITS)):
            raise ValueError(f"out (--out): {self.out} is the generator, the dataset or one of its splits; write the "
                             "generated split somewhere else")


def world_settings(data: str | Path, split: str) -> dict:
    """The build settings (`seed`, `raters`, `canvas`, `dim_pairs`) a world recorded in its dataset.json files;
    `data` must be the dataset directory holding `split` (not a split directory: its prompts would be taken for
    any --split)."""
    if not (Path(data) / split / "images.jsonl").is_file():
        raise ValueError(f"data (--data): {data}: expected a ShapesWorld dataset dir with {split}/images.jsonl "
                         "(the dataset directory, not one of its splits)")
    path = Path(data) / split / "dataset.json"
    settings = json.loads(path.read_text()).get("settings")
    keys = ("seed", "raters", "canvas")
    if not isinstance(settings, dict) or not all(isinstance(settings.get(k), int) for k in keys):
        raise ValueError(f"{path}: settings: expected the ShapesWorld build settings (integer seed, raters, "
                         "canvas); is this a `zreward world build` dataset?")
    return settings


def generator_seed(seed: int, split_index: int, prompt: int, image: int) -> int:
    """The generator seed of image `image` of prompt `prompt` of a split (a 31-bit draw from their SeedSequence)."""
    return int(np.random.SeedSequence([seed, split_index, prompt, image]).generate_state(1)[0] >> 1)


def _pairs(ids: list[str], ratings: np.ndarray, pool: RaterPool, dims: tuple[str, ...]) -> list[PairRecord]:
    """All within-prompt pairs of one prompt's images (overall by the raters' votes, then per dimension when the
    world writes per-dimension pairs)."""
    ia, ib = np.triu_indices(len(ids), 1)
    out = []
    for dim in dims:
        labels, counts = judge_pairs(pool, ratings, ia, ib, dim)
        out += [PairRecord(a=ids[a], b=ids[b], dim=dim, label=lab,
                           votes={"a": int(c[0]), "b": int(c[1]), "tie": int(c[2])})
                for a, b, lab, c in zip(ia, ib, labels, counts)]
    return out


def label_generator(cfg: LabelConfig) -> dict:
    """Draw, perceive, rate and write the split (see the module docstring). Returns its summary
    (also `<out>/label.json`): counts, oracle and MOS means per dimension, non-tie pair share."""
    settings = world_settings(cfg.data, cfg.split)
    prompts = prompts_of(cfg.data, cfg.split)
    if cfg.prompts is not None:
        if cfg.prompts > len(prompts):
            raise ValueError(f"prompts (--prompts): asked for {cfg.prompts}, the {cfg.split} split of {cfg.data} "
                             f"has {len(prompts)} distinct prompts")
        prompts = prompts[:cfg.prompts]
    gen = load_generator(cfg.generator).eval()
    pool = RaterPool.create(int(settings["raters"]), int(settings["seed"]))
    canvas, si, k = int(settings["canvas"]), SPLITS.index(cfg.split), cfg.per_prompt
    perceive_cfg = PerceiveConfig(canvas_out=canvas)
    pair_dims = ("overall", *DIMS) if settings.get("dim_pairs", True) else ("overall",)
    raters = [f"r{r}" for r in range(pool.n)]
    info = DatasetInfo(name="shapes_world_generated", source=f"zreward gen label: {cfg.generator}",
                       extra={"label": {**asdict(cfg), "world_settings": settings}})
    oracle_sum, mos_sum, ties, n_pairs, kinds = np.zeros(len(DIMS)), np.zeros(len(DIMS)), 0, 0, Counter()
    with SplitWriter(cfg.out, info, overwrite=cfg.overwrite) as w:
        per_call = max(1, cfg.batch_size // k)
        for s in range(0, len(prompts), per_call):
            chunk = list(range(s, min(len(prompts), s + per_call)))
            texts = [prompts[i] for i in chunk for _ in range(k)]
            seeds = [generator_seed(cfg.seed, si, i, j) for i in chunk for j in range(k)]
            with torch.no_grad():
                imgs = gen.generate(texts, seeds, batch_size=len(texts))  # (n, 3, S, S) in [0, 1]
            stored = imgs if imgs.shape[-1] == canvas else F.interpolate(
                imgs, size=(canvas, canvas), mode="bilinear", align_corners=False).clamp(0, 1)
            uint8 = (stored * 255).round().to(torch.uint8)
            for c, i in enumerate(chunk):
                rows = range(c * k, (c + 1) * k)
                scenes = [perceive_scene(imgs[r], perceive_cfg) for r in rows]
                facts = [oracle_facts(sc, prompts[i]) for sc in scenes]
                true = np.array([[f.scores[d] for d in DIMS] for f in facts])  # (k, 4)
                ratings = pool.rate(true, np.random.default_rng([cfg.seed, si, i, 2]))  # (k, R, 4)
                ids = [f"g{i:06d}_s{j}" for j in range(k)]
                labels = image_labels(ratings)
                for j, r in enumerate(rows):
                    w.add_image(ImageRecord(
                        id=ids[j], prompt=prompts[i], image="", labels=labels[j],
                        rationales=rationales(facts[j], scenes[j]), scene=scenes[j],
                        meta={"oracle": dict(facts[j].scores), "generator_seed": seeds[r], "raters": raters}),
                        png_bytes(uint8[r].permute(1, 2, 0).numpy()))
                for p in _pairs(ids, ratings, pool, pair_dims):
                    w.add_pair(p)
                    if p.dim == "overall":
                        n_pairs += 1
                        ties += p.label == "tie"
                oracle_sum += true.sum(0)
                mos_sum += ratings.mean(1).sum(0)
                kinds.update(len(sc["objects"]) for sc in scenes)
        n = len(prompts) * k
        summary = {"out": str(cfg.out), "prompts": len(prompts), "images": n, "pairs_overall": n_pairs,
                   "ties_overall": ties, "oracle_mean": dict(zip(DIMS, np.round(oracle_sum / n, 4).tolist())),
                   "mos_mean": dict(zip(DIMS, np.round(mos_sum / n, 4).tolist())),
                   "objects_perceived": {str(a): b for a, b in sorted(kinds.items())}}
        (w.tmp / "label.json").write_text(json.dumps(summary, indent=2) + "\n")  # lands with the split, atomically
    return summary
