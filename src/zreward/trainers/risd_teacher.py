"""RISD's teacher pass and its target cache: the teacher's chain-averaged level distributions of every training
image, computed once (M sampled chains per (image, dim)) and kept in a safetensors file, or computed in parts.

- `teacher_targets`: every process takes part (`zreward.trainers.sharding`); see its docstring and the module
  docstring of `zreward.trainers.risd` for the keys that make a cache file stale.
- `teacher_part` (`teacher.part=R/W`): one process runs part R of W of the same pass and writes a part file next to
  the cache file; `teacher_targets` reads the cache file and its part files (rows keyed by image).

The functions take RISD's config (its `teacher`, `run` and `accelerator` sections).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
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
from zreward.models.engine import check_engine, make_engine
from zreward.models.scorer import load_scorer
from zreward.trainers.data import TrainData
from zreward.trainers.sharding import all_gather_objects, barrier, chunk_seed, chunks, my_chunks, run_and_gather


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
        m = re.fullmatch(r"([0-9]+)/([0-9]+)", str(self.part))
        r, w = m.groups() if m else ("", "")
        if not (m and int(r) < int(w)):
            raise ValueError(f"teacher.part: expected R/W with 0 <= R < W (e.g. 0/2), got {self.part!r}")
        return int(r), int(w)


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


def _read_file(path: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, dict] | None:
    """(keys, probs, in-level mass, metadata) of a cache or part file; None (with a message) when unreadable."""
    what = "its rows are recomputed" if ".part" in path.name else "rebuilding it"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["zreward"])
            probs, mass = f.get_tensor("probs"), f.get_tensor("in_level_mass")
        keys = meta["keys"]
    except Exception as e:  # a torn/foreign file: rebuild rather than train on garbage
        print(f"[risd] {path}: unreadable teacher cache ({e}); {what}", file=sys.stderr)
        return None
    if len(keys) != len(probs):
        print(f"[risd] {path}: {len(keys)} keys for {len(probs)} rows; {what}", file=sys.stderr)
        return None
    return keys, probs, mass, meta


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


def _cache_file(cfg, dims: list[str], levels: list[float], cache_dir: Path) -> tuple[Path, dict]:
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


def teacher_targets(cfg, data: TrainData, dims: list[str], cache_dir: Path, acc) -> tuple[torch.Tensor, dict]:
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
    if world > 1:  # the chunks are cut from `missing`: a part file written between two ranks' reads would split them
        seen = all_gather_objects(hashlib.sha256(json.dumps(missing).encode()).hexdigest(), wait, "risd cache rows")
        if len(set(seen)) > 1:
            raise RuntimeError(f"{path}: the processes read different teacher caches (a part file was written "
                               "during the pass); run again when the teacher.part jobs have finished")
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


def teacher_part(cfg, data: TrainData, dims: list[str]) -> Path:
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
    device = cfg.accelerator.torch_device()  # where one pass would run (`make_accelerator`)
    path, settings = _cache_file(cfg, dims, data.levels, cache_dir_of(cfg))
    out = part_path(path, r, w)
    rows = _read_cache(path, parts=False)[0]
    keys = item_keys(data)
    missing = [i for i, k in enumerate(keys) if k not in rows]
    parts = chunks(len(missing), cfg.teacher.batch_size)
    mine = {k: [missing[j] for j in parts[k]] for k in range(r, len(parts), w)}
    # what makes this part's rows: a part file of another pass (other images, chunks or device) is replaced
    settings = {**settings, "part": {"chunks": {str(k): [keys[i] for i in v] for k, v in mine.items()},
                                     "device": device}}
    old = _read_file(out) if out.exists() else None
    if old is not None and old[3].get("settings") == settings:
        return out
    for f in path.parent.glob(f"{path.stem}.part*of*{path.suffix}"):  # another split of this pass: stale
        if not f.name.endswith(f"of{w}{path.suffix}"):
            f.unlink(missing_ok=True)
    done = _run_teacher(cfg, data, dims, mine, device) if mine else {}
    empty = torch.zeros(0, len(dims), len(data.levels)), torch.zeros(0, len(dims))
    got = [done[k] for k in sorted(done)] or [empty]
    _write_cache(out, [keys[i] for k in sorted(mine) for i in mine[k]], torch.cat([g[0] for g in got]),
                 torch.cat([g[1] for g in got]), settings)
    return out


def _run_teacher(cfg, data: TrainData, dims: list[str], work: dict[int, list[int]],
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


def cache_dir_of(cfg) -> Path:
    """`teacher.cache_dir`, else <run.output_dir>/teacher_cache."""
    return Path(cfg.teacher.cache_dir or Path(cfg.run.output_dir) / "teacher_cache")
