"""RISD: distil a reasoning teacher's chain-averaged score distribution into a one-token (direct-mode) student.

Z-Reward (arXiv 2606.09076) trains its student (Qwen3.5-9B, one output token) to match the teacher's
(Qwen3.5-27B) **reasoning-conditioned** level distribution averaged over M sampled chains. Implemented here:

1. **Teacher targets, computed once and cached.** For every training input — the labelled split `data.train` and
   an optional unlabelled split `data.extra_unlabelled` (e.g. extra generated ShapesWorld images; any labels there
   are ignored) — the teacher (`teacher.path`, a reasoning-mode Scorer, e.g. GDSO or the SFT cold start) samples
   M = `teacher.samples` chains per (image, dim) at `teacher.temperature` (batched
   `Scorer.score(reasoning=True, samples=M)`; chains sampled by `teacher.engine`: hf KV-cached `generate`, or vllm
   on `teacher.path` — a frozen teacher needs no weight sync and no log-prob correction, only its distributions
   after each chain are used, read by the teacher's own teacher-forced forward), reads the level distribution after each chain and averages them:
   p̄_T = (1/M) Σ_m p_T(· | chain_m) (the per-chain average is what `Scorer.score` returns).
   The cache is a safetensors file under `teacher.cache_dir` named by a hash of (teacher directory fingerprint,
   M, temperature, max_new_tokens, dims, levels, seed); inside, rows are keyed by a hash of (image id, prompt,
   image file, `data.max_pixels`). A rerun reuses every row it finds and computes only missing ones; changing the
   teacher's files, M, the temperature, the chain length or an image gives new keys, so stale targets are never
   used. Under torchrun every process runs the teacher on its share of the missing images (batches of
   `teacher.batch_size`, each under its own seed, so the file equals a one-process run's; see `teacher_targets`),
   the main process writes the file, and the teacher is freed before the student is loaded.
2. **Student loss** per step over prompt-grouped batches of the union of both splits (direct readout, with grad):
       kl_weight    · KL(p̄_T ‖ p_S)                      (losses.risd_kl, every (image, dim) row)
     + gap_weight   · Huber(E_S[a] − E_S[b], E_T[a] − E_T[b])   (losses.score_gap_huber, score-gap distillation
                                                           over all within-prompt pairs and dims; E = expectation)
     + human_weight · KL(human label ‖ p_S)               (losses.kl_div_levels, labelled rows only; 0 by default)
   Each term is Σ / global item count, exact under DDP (`loop.global_normalisers`, see `zreward.trainers.sft`).

Choices where the paper is silent: M = 4 by default; plain temperature sampling at the teacher's temperature
(no top-k/top-p); the score-gap target uses the expectation of the averaged distribution (equal to the mean of
the per-chain expectations); gaps use a Huber loss (δ = 1 level point) over every within-prompt pair; the student
starts from `model.init_from` (usually a smaller model than the teacher) and is saved in "direct" mode.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from zreward.atomic import atomic_write_bytes
from zreward.data.image_store import ImageStore
from zreward.losses import kl_div_levels, risd_kl, score_gap_huber
from zreward.models.engine import check_engine, make_engine
from zreward.models.scorer import load_scorer
from zreward.trainers.common import DataConfig, TrainConfig, build_scorer, val_pairwise_accuracy
from zreward.trainers.config import parse_cli
from zreward.trainers.data import TrainData, concat_splits, group_batch, split_by_group, within_group_pairs
from zreward.trainers.loop import RunLoop, global_normalisers
from zreward.trainers.run_utils import RunConfig
from zreward.trainers.sharding import all_gather_objects, barrier, chunk_seed, chunks, my_chunks, run_and_gather


@dataclass
class RISDDataConfig(DataConfig):
    """The shared data section plus RISD's unlabelled inputs."""

    extra_unlabelled: str | None = field(default=None, metadata={"help": "extra split dir whose images get teacher targets only (labels ignored)"})
    extra_max_images: int | None = field(default=None, metadata={"help": "use only the first N extra images"})


@dataclass
class TeacherConfig:
    """The reasoning teacher and its cached targets (`cfg.teacher`)."""

    path: str = field(default="", metadata={"help": "teacher Scorer dir (reasoning mode, e.g. a GDSO or SFT-cold-start final/; required)"})
    samples: int = field(default=4, metadata={"help": "M sampled chains per (image, dim) averaged into p̄_T"})
    temperature: float | None = field(default=None, metadata={"help": "chain sampling temperature (null: the teacher's zreward.json)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "chain length bound (null: the teacher's zreward.json)"})
    batch_size: int = field(default=32, metadata={"help": "images per teacher generate call"})
    dtype: str | None = field(default=None, metadata={"help": "teacher dtype: fp32, bf16 or fp16 (default: fp32 on CPU, bf16 on GPU)"})
    cache_dir: str | None = field(default=None, metadata={"help": "where the target cache lives (null: <run.output_dir>/teacher_cache)"})
    barrier_timeout_s: float = field(default=3600.0, metadata={"help": "how long a process that finished its share of the teacher pass waits for the others (shares differ by at most one batch; this covers stragglers)"})
    engine: str = field(default="hf", metadata={"help": "what samples the teacher's chains: hf (transformers generate) or vllm (vLLM on teacher.path, prefix caching; pip install 'zreward[vllm]', CUDA only, untested here)"})
    part: str | None = field(default=None, metadata={"help": "R/W: only run the teacher on part R of W of the targets the cache file lacks, write them next to it as a part file and stop without training (the W parts can run side by side, in separate jobs; a normal run then reads them all)"})

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1:
            raise ValueError(f"teacher.samples and teacher.batch_size must be >= 1, got {self.samples}, {self.batch_size}")
        check_engine(self.engine, "teacher.engine")
        if not self.barrier_timeout_s > 0:
            raise ValueError(f"teacher.barrier_timeout_s must be > 0, got {self.barrier_timeout_s}")
        self.part_of()

    def part_of(self) -> tuple[int, int] | None:
        """`part` as (R, W), or None."""
        if self.part is None:
            return None
        r, _, w = str(self.part).partition("/")
        if not (r.isdigit() and w.isdigit() and int(r) < int(w)):
            raise ValueError(f"teacher.part: expected R/W with 0 <= R < W (e.g. 0/2), got {self.part!r}")
        return int(r), int(w)


@dataclass
class RISDConfig:
    """The RISD loss section (`cfg.risd`)."""

    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to distil (null: all of the split's)"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(p̄_T ‖ p_S)"})
    gap_weight: float = field(default=1.0, metadata={"help": "weight of the within-prompt score-gap distillation (Huber)"})
    gap_delta: float = field(default=1.0, metadata={"help": "Huber threshold of the score-gap term"})
    human_weight: float = field(default=0.0, metadata={"help": "weight of KL(human label ‖ p_S) on labelled rows (0: off)"})


@dataclass
class Config(TrainConfig):
    """`zreward train risd` configuration (YAML files and `a.b=c` overrides only override these defaults)."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/risd"))
    data: RISDDataConfig = field(default_factory=RISDDataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    risd: RISDConfig = field(default_factory=RISDConfig)


# ------------------------------------------------------------------------------------------ teacher cache


def dir_fingerprint(path: str | Path, full_bytes: int = 16 << 20, edge: int = 1 << 20) -> str:
    """Hash of a model directory: every file's relative name and size, the full content of files up to 16 MiB
    and the first/last MiB of larger ones (weights of a 27B model are not re-read on every run)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"teacher.path: {root} is not a directory (expected a teacher Scorer dir)")
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root)}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= full_bytes:
                h.update(f.read())
            else:
                h.update(f.read(edge))
                f.seek(size - edge)
                h.update(f.read(edge))
    return h.hexdigest()


def item_keys(data: TrainData, idx: list[int] | None = None) -> list[str]:
    """One key per image (of `idx`, default all): hash of (id, prompt, `data.max_pixels` cap, the encoded file), so
    an image file changed under the same id gets a new key. The file bytes are hashed, not decoded pixels: no
    image is decoded to build the keys."""
    store = data.images
    if not isinstance(store, ImageStore):
        raise TypeError("item_keys: expected TrainData.images to be an ImageStore (from load_train_data)")
    keys = []
    for i in range(len(data)) if idx is None else idx:
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{data.ids[i]}\0{data.prompts[i]}\0{store.max_pixels}\0".encode())
        h.update(store.file_bytes(i))
        keys.append(h.hexdigest())
    return keys


def _read_file(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = json.loads(f.metadata()["zreward"])["keys"]
            probs, mass = f.get_tensor("probs"), f.get_tensor("in_level_mass")
    except Exception as e:  # a torn/foreign file: rebuild rather than train on garbage
        print(f"[risd] {path}: unreadable teacher cache ({e}); rebuilding it", file=sys.stderr)
        return None
    if len(keys) != len(probs):
        print(f"[risd] {path}: {len(keys)} keys for {len(probs)} rows; rebuilding it", file=sys.stderr)
        return None
    return keys, probs, mass


def part_path(path: Path, r: int, w: int) -> Path:
    """The file of part r of w of a cache file's pass (`teacher.part`)."""
    return path.with_name(f"{path.stem}.part{r}of{w}{path.suffix}")


def _read_cache(path: Path, parts: bool = True) -> tuple[dict[str, int], torch.Tensor | None, torch.Tensor | None]:
    """(row of each key, probs, in-level mass) of the cache file and, with `parts`, of its part files (a key
    found twice: its first row)."""
    files = [path] + (sorted(path.parent.glob(f"{path.stem}.part*of*{path.suffix}")) if parts else [])
    got = [x for f in files if f.exists() and (x := _read_file(f)) is not None]
    if not got:
        return {}, None, None
    keys = [k for g in got for k in g[0]]
    rows = {}
    for r, k in enumerate(keys):
        rows.setdefault(k, r)
    return rows, torch.cat([g[1] for g in got]), torch.cat([g[2] for g in got])


def _cache_file(cfg: Config, dims: list[str], levels: list[float], cache_dir: Path) -> tuple[Path, dict]:
    """The cache file of these teacher settings, and the settings (named by their hash; see the module docstring)."""
    t = cfg.teacher
    settings = {"teacher": dir_fingerprint(t.path), "samples": t.samples, "temperature": t.temperature,
                "max_new_tokens": t.max_new_tokens, "dims": dims, "levels": levels, "seed": cfg.run.seed,
                **({"engine": t.engine} if t.engine != "hf" else {})}  # hf keeps the keys of caches made before engines
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"teacher_{tag}.safetensors", settings


def _write_cache(path: Path, keys: list[str], probs: torch.Tensor, mass: torch.Tensor, settings: dict) -> None:
    blob = st_save({"probs": probs.contiguous(), "in_level_mass": mass.contiguous()},
                   # one metadata entry: safetensors writes several in a per-process random (hash) order,
                   # and the file must not depend on which process wrote it
                   metadata={"zreward": json.dumps({"keys": keys, "settings": settings})})
    atomic_write_bytes(path, blob)


def teacher_targets(cfg: Config, data: TrainData, dims: list[str], cache_dir: Path, acc) -> tuple[torch.Tensor, dict]:
    """(N, D, L) chain-averaged teacher distributions for every image of `data` (cached; see module docstring).

    Every process takes part (`zreward.trainers.sharding`): each hashes its contiguous share of the images into
    cache keys, the missing images are cut into `teacher.batch_size` chunks, rank r runs the teacher on chunks
    k ≡ r (mod world) under seed `chunk_seed(run.seed, k)`, the chunks are gathered and the main process writes
    the file — the same file as one process would write. The gathers wait up to `teacher.barrier_timeout_s`.

    Returns:
        (targets, info) with info = {"cache": path, "computed": rows computed now, "seconds": time spent,
        "in_level_mass": mean teacher in-level mass}.
    """
    t = cfg.teacher
    if not t.path:
        raise ValueError("teacher.path is required: a reasoning-mode teacher Scorer directory")
    path, settings = _cache_file(cfg, dims, data.levels, cache_dir)
    rank, world, wait = acc.process_index, acc.num_processes, t.barrier_timeout_s
    t0 = time.perf_counter()
    share = np.array_split(np.arange(len(data)), world)[rank].tolist()
    keys = [k for part in all_gather_objects(item_keys(data, share), wait, "risd teacher cache keys") for k in part]
    rows, probs, mass = _read_cache(path)  # every rank reads the same file before anyone writes
    missing = [i for i, k in enumerate(keys) if k not in rows]
    if missing:
        parts = chunks(len(missing), t.batch_size)
        mine = {k: [missing[j] for j in parts[k]] for k in my_chunks(len(parts), rank, world)}
        done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for got in run_and_gather(lambda: _run_teacher(cfg, data, dims, mine, acc.device) if mine else {}, wait,
                                  "risd teacher targets (teacher.barrier_timeout_s)"):
            done.update(got)
        if acc.is_main_process:
            new_p = torch.cat([done[k][0] for k in range(len(parts))])
            new_m = torch.cat([done[k][1] for k in range(len(parts))])
            all_keys = list(rows) + [keys[i] for i in missing]
            old = torch.tensor(list(rows.values()), dtype=torch.long)  # one row per key (parts may repeat one)
            probs = new_p if probs is None else torch.cat([probs[old], new_p])
            mass = new_m if mass is None else torch.cat([mass[old], new_m])
            _write_cache(path, all_keys, probs, mass, settings)
        barrier(wait, "risd teacher cache write")
        rows, probs, mass = _read_cache(path)
    absent = [k for k in keys if k not in rows]
    if absent:
        raise RuntimeError(f"{path}: teacher cache lacks {len(absent)} of {len(keys)} training images")
    sel = torch.tensor([rows[k] for k in keys])
    info = {"cache": str(path), "computed": len(missing), "seconds": time.perf_counter() - t0,
            "in_level_mass": float(mass[sel].mean())}
    return probs[sel].float(), info


def teacher_part(cfg: Config) -> Path:
    """`teacher.part` = R/W: run the teacher on part R of W of the targets the cache file lacks and write them to
    the part file (`part_path`); returns it. The images the cache file lacks are cut into `teacher.batch_size`
    chunks exactly as one `teacher_targets` pass cuts them (the part files of the same pass are not counted), and
    part R runs chunks k ≡ R (mod W) under `chunk_seed(run.seed, k)`: the W parts hold the rows one pass computes.
    One process; an existing part file of the same pass is kept (a rerun of a finished part does nothing)."""
    r, w = cfg.teacher.part_of()
    if not cfg.teacher.path:
        raise ValueError("teacher.path is required: a reasoning-mode teacher Scorer directory")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("teacher.part: runs in one process (split the pass into more parts instead of torchrun)")
    data, dims = train_inputs(cfg)
    path, settings = _cache_file(cfg, dims, data.levels, _cache_dir(cfg))
    out = part_path(path, r, w)
    if out.exists() and _read_file(out) is not None:
        return out
    rows = _read_cache(path, parts=False)[0]
    keys = item_keys(data)
    missing = [i for i, k in enumerate(keys) if k not in rows]
    parts = chunks(len(missing), cfg.teacher.batch_size)
    mine = {k: [missing[j] for j in parts[k]] for k in range(r, len(parts), w)}
    done = _run_teacher(cfg, data, dims, mine, "cuda" if torch.cuda.is_available() else "cpu") if mine else {}
    empty = torch.zeros(0, len(dims), len(data.levels)), torch.zeros(0, len(dims))
    got = [done[k] for k in sorted(done)] or [empty]
    _write_cache(out, [keys[i] for k in sorted(mine) for i in mine[k]], torch.cat([g[0] for g in got]),
                 torch.cat([g[1] for g in got]), settings)
    return out


def _run_teacher(cfg: Config, data: TrainData, dims: list[str], work: dict[int, list[int]],
                 device) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Score each chunk {k: image indices} with the teacher in reasoning mode, M samples each, under
    `chunk_seed(run.seed, k)`; returns {k: ((n, D, L) probs, (n, D) in-level mass)} on the CPU."""
    t = cfg.teacher
    teacher = load_scorer(t.path, device=str(device), dtype=t.dtype)
    teacher.model.eval()
    teacher.engine = make_engine(t.engine, "teacher.engine", model_dir=t.path)  # frozen: no weight sync
    missing = [d for d in dims if d not in teacher.dims]
    if missing:
        raise ValueError(f"teacher.path {t.path}: teacher has no dims {missing} (it has {teacher.dims})")
    if t.temperature is not None:
        teacher.config.temperature = t.temperature
    if t.max_new_tokens is not None:
        teacher.config.max_new_tokens = t.max_new_tokens
    out = {}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):  # the teacher's sampling must not shift the training RNG
        for k, idx in work.items():
            torch.manual_seed(chunk_seed(cfg.run.seed, k))
            o = teacher.score([data.prompts[i] for i in idx], data.image_batch(idx), dims=dims, reasoning=True,
                              samples=t.samples)
            out[k] = (o.probs.float().cpu(), o.in_level_mass.float().cpu())
    del teacher
    return out


# -------------------------------------------------------------------------------------------------- train


def step_losses(cfg: Config, scorer, data: TrainData, teach: torch.Tensor, idx: np.ndarray, dims: list[str],
                norms: dict[str, float], device) -> dict[str, torch.Tensor]:
    """Loss terms of one (micro-)batch, each Σ_items / global normaliser (see module docstring)."""
    r = cfg.risd
    ro = scorer.direct_readout([data.prompts[i] for i in idx], data.image_batch(idx), dims)
    logits = ro.logits.float()
    p_t = teach[torch.as_tensor(idx)].to(device)  # (B, D, L)
    terms = {"kl": risd_kl(p_t, logits, reduction="sum") / norms["rows"]}
    if r.gap_weight:
        ia, ib = (torch.as_tensor(x, dtype=torch.long, device=device) for x in within_group_pairs(data.group[idx]))
        mean_t = p_t @ scorer.levels.to(device)  # (B, D)
        mean_s = ro.mean.float()
        terms["gap"] = score_gap_huber((mean_s[ia] - mean_s[ib]).flatten(), (mean_t[ia] - mean_t[ib]).flatten(),
                                       delta=r.gap_delta, reduction="sum") / norms["pairs"]
    if r.human_weight:
        di = data.dim_index(dims)
        target = torch.as_tensor(data.target[idx][:, di], device=device)
        mask = torch.as_tensor(data.mask[idx][:, di], device=device)
        terms["human_kl"] = kl_div_levels(logits, target, mask, reduction="sum") / norms["labelled"]
    return terms


def train_inputs(cfg: Config) -> tuple[TrainData, list[str]]:
    """The images the student learns from (`data.train` + `data.extra_unlabelled`, labels of the latter dropped)
    and the dims it distils."""
    if not cfg.data.train:
        raise ValueError("data.train is required: a canonical split directory")
    data = cfg.data.load_train()
    if cfg.data.extra_unlabelled:
        data = concat_splits(data, cfg.data.load(cfg.data.extra_unlabelled, cfg.data.extra_max_images),
                             keep_labels=False, what="data.extra_unlabelled")
    dims = list(cfg.risd.dims or data.dims)
    data.dim_index(dims)  # raises naming unknown dims
    return data, dims


def _cache_dir(cfg: Config) -> Path:
    return Path(cfg.teacher.cache_dir or Path(cfg.run.output_dir) / "teacher_cache")


def train(cfg: Config) -> Path:
    """Build/reuse the teacher cache, then train the direct-mode student; returns `run_dir/final` (with
    `teacher.part`: only that part of the teacher pass, `teacher_part`; returns the part file)."""
    if cfg.teacher.part is not None:
        return teacher_part(cfg)
    data, dims = train_inputs(cfg)
    loop = RunLoop(cfg, "risd")
    val = cfg.data.load_val()
    teach, tinfo = teacher_targets(cfg, data, dims, _cache_dir(cfg), loop.acc)
    if loop.is_main:
        print(f"[risd] teacher targets for {len(data)} images: {tinfo['computed']} computed, "
              f"{len(data) - tinfo['computed']} from {tinfo['cache']} ({tinfo['seconds']:.1f} s)", file=sys.stderr)
    scorer = build_scorer(cfg.model, loop.device)
    bad = [d for d in dims if d not in scorer.dims]
    if bad:
        raise ValueError(f"risd.dims: {bad} are not dims of the student {cfg.model.init_from} ({scorer.dims})")
    start = loop.start(scorer)
    r, ga, device, di = cfg.risd, cfg.accelerator.gradient_accumulation_steps, loop.device, data.dim_index(dims)
    weights = {"kl": r.kl_weight, "gap": r.gap_weight, "human_kl": r.human_weight}

    def train_step(step: int) -> dict:
        idx = group_batch(data, cfg.data.prompts_per_batch, step, cfg.run.seed, rank=loop.rank,
                          world_size=loop.world, max_per_prompt=cfg.data.max_per_prompt)
        n_pairs = len(within_group_pairs(data.group[idx])[0]) * len(dims)
        rows, pairs, labelled = global_normalisers([len(idx) * len(dims), n_pairs, data.mask[idx][:, di].sum()],
                                                   device)
        norms = {"rows": rows, "pairs": pairs, "labelled": labelled}
        metrics = loop.step_on_terms(step, split_by_group(idx, data.group, ga),
                                     lambda part: step_losses(cfg, scorer, data, teach, part, dims, norms, device),
                                     weights)
        if step == start:
            metrics.update(teacher_cache_s=tinfo["seconds"], teacher_computed=tinfo["computed"],
                           teacher_in_level_mass=tinfo["in_level_mass"])
        return metrics

    def evaluate(step: int) -> dict:
        return val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size)

    loop.run(train_step, evaluate if val is not None else None)
    return loop.save_final(scorer, "direct")


def main(argv: list[str] | None = None) -> int:
    """`zreward train risd --config FILE [a.b=c ...]`."""
    cfg = parse_cli(Config, list(argv or []), prog="zreward train risd")
    final = train(cfg)
    print(f"[risd] final scorer: {final}")
    return 0
