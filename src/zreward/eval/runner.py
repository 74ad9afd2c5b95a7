"""The evaluation runner behind `zreward eval`: score a canonical split with saved Scorers, compute every metric.

Implemented (the maths lives in `metrics`, `calibration`, `bootstrap`, `cost`; this file only wires data to it):
- **Model specs** `[NAME=]DIR[:direct | :reasoning[:M]]` (`parse_model_spec`). The name defaults to the directory
  name (a trainer's `run_dir/final` is named after `run_dir`). Mode: an explicit suffix wins; otherwise a model
  whose `zreward.json` mode is "reasoning" is evaluated in reasoning mode with `samples` chains when the run asks
  for reasoning (`--reasoning`), and every other model (direct, RewardDance's yes/no, reasoning models without
  `--reasoning`) through the default `Scorer.score` call.
- **Data** (`load_eval_data`): any canonical split. Labels per (image, dim) become target distributions with
  `zreward.data.labels.label_dist` (hist, else ratings, else MOS+std); MOS = the label's `mos`, else the mean of
  that distribution. ShapesWorld records carry `meta.oracle`; then the annotator ceiling is computed exactly as
  the dataset card does (oracle mean-weight overall on non-tie human pairs, oracle ties half right), with a CI.
- **Metrics** (`zreward.eval.model_metrics`): overall-pair accuracy (with and without ties), per-dimension
  accuracy (the split's per-dimension pairs, else MOS-derived within-prompt pairs), KL / JS / W1, SRCC / PLCC,
  Thurstone ECE; each with a 95% bootstrap CI resampling whole prompts and its n.
- **Cost** (same process, same machine, one model after another): one untimed warm-up call on two images, then
  the whole split scored once, each call of `batch_size` images under its own `Timer`; `img_per_s` = 1 / the
  median over calls of seconds per image (robust to other processes briefly loading the machine),
  `img_per_s_total` = images / total seconds; generated tokens per image (reasoning:
  the decoded chains re-tokenised — equal to the generated count except special tokens, which are skipped);
  peak memory over the timed pass (`cost.reset_peak_memory` / `peak_memory_bytes`, which says which counter).
  Images are decoded per call (`zreward.data.image_store.ImageStore`), before its timer starts.
- **Sharded** under `torchrun --nproc_per_node N zreward ...` (`start_distributed`): the split is cut into calls of
  `batch_size` images; process r scores calls k ≡ r (mod N) (decoding only those images), every call seeded with
  `chunk_seed(seed, k)` so the sampled chains do not depend on N or on which process ran them; the calls are
  gathered (`zreward.trainers.sharding`) and the main process computes the metrics and writes the report. N = 1 is
  the same computation in one process, so the scores are identical. Cost under N processes: `seconds` sums every
  process's timed calls (device-seconds; `img_per_s` stays a per-device rate), peak memory is the largest
  process's.
"""
from __future__ import annotations

import gc
import io
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.atomic import atomic_write_bytes
from zreward.data.image_store import ImageStore
from zreward.data.labels import dist_mean_std, label_dist
from zreward.data.records import Split, read_split
from zreward.eval.calibration import pair_outcome
from zreward.eval.cost import Timer, peak_memory_bytes, reset_peak_memory
from zreward.data.shapes_world.oracle import DIMS as ODIMS
from zreward.eval.model_metrics import ceiling_metrics, compute_metrics
from zreward.models.engine import check_engine, make_engine
from zreward.models.scorer import load_scorer
from zreward.trainers.sharding import chunk_seed, chunks, my_chunks, rank_world, run_and_gather

__all__ = ["ModelSpec", "parse_model_spec", "resolve_mode", "EvalData", "load_eval_data", "ModelScores",
           "score_model", "score_spec", "model_results", "evaluate", "json_clean", "compute_metrics",
           "ceiling_metrics", "start_distributed"]

# how long a process that finished its calls waits for the others at the gather (shares differ by one call)
GATHER_TIMEOUT_S = 3600.0

_NAME_RE = re.compile(r"^([A-Za-z0-9_.\-]+)=(.+)$")
_MODE_RE = re.compile(r"^(.*?):(direct|reasoning)(?::(\d+))?$")


# ---------------------------------------------------------------------------------------------- model specs

@dataclass
class ModelSpec:
    """One `--model` argument. mode None = decided from zreward.json and the run's --reasoning flag."""

    path: Path
    name: str
    mode: str | None = None
    samples: int | None = None


def default_name(path: Path) -> str:
    path = Path(path)
    return path.parent.name if path.name == "final" and path.parent.name else path.name


def parse_model_spec(text: str) -> ModelSpec:
    """`[NAME=]DIR[:direct | :reasoning[:M]]` → ModelSpec.

    Examples: `runs/sft/final` (name "sft"), `teacher=runs/gdso/final:reasoning:4`, `runs/grpo/final:direct`.
    """
    name = None
    m = _NAME_RE.match(text)
    if m and "/" not in m.group(1):
        name, text = m.group(1), m.group(2)
    mode = samples = None
    m = _MODE_RE.match(text)
    if m:
        text, mode = m.group(1), m.group(2)
        samples = int(m.group(3)) if m.group(3) else None
        if mode == "direct" and samples is not None:
            raise ValueError(f"--model {text}: ':direct' takes no sample count (use ':reasoning:M')")
        if samples is not None and samples < 1:
            raise ValueError(f"--model {text}: samples must be >= 1, got {samples}")
    if not text:
        raise ValueError("--model: empty directory")
    path = Path(text)
    return ModelSpec(path=path, name=name or default_name(path), mode=mode, samples=samples)


def resolve_mode(spec: ModelSpec, config_mode: str, reasoning: bool, samples: int) -> tuple[bool, int]:
    """(use reasoning mode, samples per (image, dim)) for one model; see the module docstring."""
    if spec.mode == "direct":
        return False, 1
    if spec.mode == "reasoning":
        return True, spec.samples or samples
    return (True, samples) if reasoning and config_mode == "reasoning" else (False, 1)


# ----------------------------------------------------------------------------------------------------- data

@dataclass
class EvalData:
    """A split as arrays.

    Attributes:
        split: the parsed split.  ids / prompts / images: N image ids, prompts and decoded PIL images.
        prompt_code: (N,) int prompt index (the bootstrap's groups).  dims / levels: the split's.
        target: (N, D, L) label distributions, NaN rows where unlabelled.  mos: (N, D) NaN where unlabelled.
        oracle: (N, 4) ShapesWorld oracle scores or None.
        pa, pb: (P,) pair image indices.  pdim / plabel: (P,) pair dimension and label strings.
        outcome: (P,) empirical P(a ≻ b) (vote share when votes are stored, else from the label).
    """

    split: Split
    ids: list[str]
    prompts: list[str]
    images: ImageStore
    prompt_code: np.ndarray
    dims: list[str]
    levels: list[float]
    target: np.ndarray
    mos: np.ndarray
    oracle: np.ndarray | None
    pa: np.ndarray
    pb: np.ndarray
    pdim: np.ndarray
    plabel: np.ndarray
    outcome: np.ndarray

    def pair_counts(self) -> dict[str, int]:
        return {str(d): int((self.pdim == d).sum()) for d in sorted(set(self.pdim.tolist()))}


def load_eval_data(split_dir: str | Path, *, max_images: int | None = None) -> EvalData:
    """Read a canonical split, turn labels and pairs into arrays; images are decoded when scored.

    Args:
        split_dir: split directory.  max_images: keep only the first N images (and the pairs among them).
    """
    split = read_split(split_dir)
    recs = split.images[:max_images] if max_images else split.images
    if not recs:
        raise ValueError(f"{split_dir}: images.jsonl: expected at least one image record")
    levels, dims = list(split.info.levels), list(split.info.dims)
    n, d, L = len(recs), len(dims), len(levels)
    target = np.full((n, d, L), np.nan)
    mos = np.full((n, d), np.nan)
    for i, r in enumerate(recs):  # one-off label parsing, a few dicts per record
        for j, dim in enumerate(dims):
            lab = r.labels.get(dim)
            if lab is None:
                continue
            try:
                p = label_dist(lab, levels)
            except ValueError as e:
                raise ValueError(f"{split.root}/images.jsonl: record {r.id!r}: labels.{dim}: {e}") from e
            target[i, j] = p
            mos[i, j] = lab.mos if lab.mos is not None else float(dist_mean_std(p, levels)[0])
    oracle = None
    if all(isinstance(r.meta.get("oracle"), dict) for r in recs):
        if all(all(k in r.meta["oracle"] for k in ODIMS) for r in recs):
            oracle = np.array([[float(r.meta["oracle"][k]) for k in ODIMS] for r in recs])
    images = ImageStore([split.image_path(r) for r in recs], [f"{split.root}: image {r.id!r}" for r in recs],
                        kind="pil")
    _, prompt_code = np.unique([r.prompt for r in recs], return_inverse=True)
    pos = {r.id: i for i, r in enumerate(recs)}
    pairs = [p for p in split.pairs if p.a in pos and p.b in pos]
    votes = np.array([[p.votes.get(k, 0) for k in ("a", "b", "tie")] if p.votes else [0, 0, 0] for p in pairs],
                     dtype=np.float64).reshape(-1, 3)
    has_votes = votes.sum(axis=1) > 0
    outcome = pair_outcome(labels=np.array([p.label for p in pairs], dtype=object)) if pairs else np.zeros(0)
    if has_votes.any():
        v = votes[has_votes]
        outcome[has_votes] = pair_outcome(votes_a=v[:, 0], votes_b=v[:, 1], votes_tie=v[:, 2])
    return EvalData(split, [r.id for r in recs], [r.prompt for r in recs], images, prompt_code, dims, levels,
                    target, mos, oracle, np.array([pos[p.a] for p in pairs], np.int64),
                    np.array([pos[p.b] for p in pairs], np.int64), np.array([p.dim for p in pairs], dtype=object),
                    np.array([p.label for p in pairs], dtype=object), outcome)


# -------------------------------------------------------------------------------------------------- scoring

@dataclass
class ModelScores:
    """One model's predictions on the split and its cost.

    Attributes:
        probs: (N, D_m, L) level distributions.  mean / std: (N, D_m).  overall: (N,).
        dims: the model's dims (D_m).  weights: (D_m,) its reward weights (of `overall`).
        reasoning / samples: the mode used.  seconds: timed scoring pass.  tokens_per_image: NaN in direct mode.
        peak_memory_bytes / memory_kind: see `zreward.eval.cost`.  chains: first chains of a few images.
        median_img_per_s: 1 / the median over scoring calls of seconds per image.
    """

    probs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    overall: np.ndarray
    dims: list[str]
    weights: np.ndarray
    reasoning: bool
    samples: int
    seconds: float
    tokens_per_image: float
    peak_memory_bytes: int
    memory_kind: str
    chains: list[list[str]] = field(default_factory=list)
    median_img_per_s: float = float("nan")

    @property
    def img_per_s(self) -> float:
        """Images / total timed seconds."""
        return self.probs.shape[0] / self.seconds if self.seconds > 0 else float("nan")

    @property
    def reported_img_per_s(self) -> float:
        """The images/s every report gives: `median_img_per_s`, else (a score file without it) `img_per_s`."""
        return self.median_img_per_s if np.isfinite(self.median_img_per_s) else self.img_per_s

    _ARRAYS = ("probs", "mean", "std", "overall", "weights")

    def save(self, path: str | Path) -> Path:
        """Write every field losslessly (float64 arrays, the rest as JSON) to one .npz, atomically; `load` reads
        it back equal, so metrics computed later equal those computed from the scoring run's own object."""
        meta = {k: v for k, v in asdict(self).items() if k not in self._ARRAYS}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **{k: getattr(self, k) for k in self._ARRAYS})
        atomic_write_bytes(Path(path), buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "ModelScores":
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in cls._ARRAYS}, **json.loads(str(z["meta"])))


def score_model(scorer, data: EvalData, *, reasoning: bool, samples: int, batch_size: int = 32,
                device: str | None = None, seed: int = 0) -> ModelScores:
    """Score every image of `data` on all the model's dims (see the module docstring for the cost protocol and
    for the sharding over processes; every process calls this and gets the whole split's scores)."""
    dims = scorer.dims
    kw = dict(dims=dims, reasoning=reasoning, samples=samples)
    scorer.model.eval()
    scorer.score(data.prompts[:2], data.images[:2], **kw)  # warm-up: allocator, lazy inits
    n = len(data.ids)
    parts = chunks(n, batch_size)
    rank, world = rank_world()

    def my_share() -> tuple[dict, int, str]:
        kind = reset_peak_memory(device)
        mine = {}
        for k in my_chunks(len(parts), rank, world):  # timed per call: the median rate resists other load
            a, b = parts[k].start, parts[k].stop
            ims = data.images[a:b]  # decoded outside the timer
            torch.manual_seed(chunk_seed(seed, k))  # the chains of call k, whichever process runs it
            with Timer(device) as t:
                o = scorer.score(data.prompts[a:b], ims, **kw)
            texts = [c for per_image in o.chains for c in per_image] if reasoning else []
            ids = scorer.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
            tokens = sum(len(x) for x in ids)
            mine[k] = ({f: getattr(o, f).double().numpy() for f in ("probs", "mean", "std", "overall")},
                       t.seconds, tokens, (o.chains or [])[:8])
        return mine, peak_memory_bytes(device, kind), kind

    got = run_and_gather(my_share, GATHER_TIMEOUT_S, "zreward eval: scoring")
    done = {k: v for part, _, _ in got for k, v in part.items()}
    peaks, kind = [p for _, p, _ in got], got[0][2]
    calls = [done[k] for k in range(len(parts))]
    cat = {f: np.concatenate([c[0][f] for c in calls]) for f in ("probs", "mean", "std", "overall")}
    sizes = np.array([len(r) for r in parts], np.float64)
    per_img = np.array([c[1] for c in calls]) / sizes
    chains = [ch for c in calls for ch in c[3]][:8]
    tokens = sum(c[2] for c in calls) / n if reasoning else float("nan")
    return ModelScores(cat["probs"], cat["mean"], cat["std"], cat["overall"], list(dims),
                       np.array(scorer.config.weights_for(list(dims)), np.float64), reasoning, samples,
                       float(sum(c[1] for c in calls)), tokens, max(peaks), kind, chains,
                       1.0 / float(np.median(per_img)))


def start_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): start the process group (gloo on CPU, NCCL on CUDA, through accelerate)
    and return this process's device (`cuda:LOCAL_RANK`); otherwise return `device` unchanged."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    from accelerate import PartialState

    return str(PartialState(cpu=device == "cpu").device)


# ---------------------------------------------------------------------------------------------------- driver

def score_spec(spec: ModelSpec, datas: list[EvalData], *, reasoning: bool = False, samples: int = 4,
               batch_size: int = 32, seed: int = 0, device: str = "cpu", temperature: float | None = None,
               engine: str = "hf", log=print) -> list[ModelScores]:
    """Load one model once, score each split of `datas` with it in the mode `resolve_mode` gives, free it (see
    `evaluate`); one `ModelScores` per split."""
    if not (spec.path / "zreward.json").is_file():
        raise FileNotFoundError(f"--model {spec.path}: expected a Scorer directory with zreward.json")
    scorer = load_scorer(spec.path, device=device, add_level_tokens=False)
    use_r, m = resolve_mode(spec, scorer.config.mode, reasoning, samples)
    if use_r and temperature is not None:
        scorer.config.temperature = temperature
    if use_r:
        scorer.engine = make_engine(engine, "--engine", model_dir=spec.path)
    how = f"reasoning, M={m}, T={scorer.config.temperature}" if use_r else "direct"
    out = []
    for data in datas:
        log(f"[eval] {spec.name}: {how} on {len(data.ids)} images")
        out.append(score_model(scorer, data, reasoning=use_r, samples=m, batch_size=batch_size, device=device,
                               seed=seed))
    del scorer
    gc.collect()
    return out


def model_results(data: EvalData, scores: dict[str, ModelScores], model_dirs: dict[str, Path], *,
                  n_boot: int = 1000, seed: int = 0, log=print) -> tuple[dict, dict]:
    """(results {name: report dict}, calibrations {name: Calibration | None}) of scored models, in `scores` order."""
    results, cals = {}, {}
    for name, sc in scores.items():
        rep, cal = compute_metrics(data, sc, n_boot=n_boot, seed=seed)
        rep["model_dir"] = str(model_dirs[name])
        results[name], cals[name] = rep, cal
        acc = rep.get("accuracy")
        log(f"[eval] {name}: accuracy {acc if acc is None else round(acc, 4)}, {rep['img_per_s']:.2f} img/s")
    return results, cals


def evaluate(specs: list[ModelSpec], data: EvalData, *, reasoning: bool = False, samples: int = 4,
             batch_size: int = 32, n_boot: int = 1000, seed: int = 0, device: str = "cpu",
             temperature: float | None = None, engine: str = "hf", log=print) -> tuple[dict, dict, dict]:
    """Load, score and measure each model in turn (`score_spec`: freed before the next, so peak memory is its own).

    `engine` samples the chains of models scored in reasoning mode (`zreward.models.engine`: hf, or vllm started
    on the model directory; the distributions are read by the Scorer's own teacher-forced forward either way).

    `temperature` overrides the chain sampling temperature of every model scored in reasoning mode with M > 1
    (None: each model's zreward.json value; M = 1 is greedy whatever the temperature).

    Under torchrun every process must call this (each scores its share, see the module docstring); the metrics
    are computed on the main process only, the others get empty `results` / `calibrations` and log nothing.

    Returns:
        (results {name: report dict}, calibrations {name: Calibration | None}, scores {name: ModelScores}).
    """
    main = rank_world()[0] == 0
    log = log if main else (lambda *a, **k: None)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--model: duplicate model names {dup}; name them with NAME=DIR")
    if temperature is not None and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"--temperature must be a finite number > 0, got {temperature}")
    check_engine(engine, "--engine")
    scores = {spec.name: score_spec(spec, [data], reasoning=reasoning, samples=samples, batch_size=batch_size,
                                    seed=seed, device=device, temperature=temperature, engine=engine, log=log)[0]
              for spec in specs}
    if not main:
        return {}, {}, scores
    results, cals = model_results(data, scores, {s.name: s.path for s in specs}, n_boot=n_boot, seed=seed, log=log)
    return results, cals, scores


def json_clean(x):
    """NaN/inf → None, numpy scalars/arrays → Python (for report.json)."""
    if isinstance(x, dict):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
