"""`zreward score`: score every image of a split directory with a saved Scorer → JSONL.

    zreward score --model DIR --data SPLIT_DIR --out scores.jsonl [--reasoning --samples M] [--batch-size 16]

One output line per image record: {"id", "prompt", "overall", "scores": {dim: {"mean", "std", "probs"}},
"in_level_mass": {dim: p}, and in reasoning mode "chains": {dim: [M strings]}}. Written atomically (tmp + rename;
the tmp file is removed when the command fails). Every record's prompt and image are checked before its batch is
scored (`zreward.models.input_checks`); a refusal names the file, the record id and the field.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from zreward.atomic import atomic_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zreward score", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="scorer directory (or hub name)")
    ap.add_argument("--data", required=True, help="split directory (records.jsonl + images/)")
    ap.add_argument("--out", required=True, help="output JSONL path")
    ap.add_argument("--dims", default=None, help="comma-separated subset of the scorer's dims")
    ap.add_argument("--reasoning", action="store_true", help="generate reasoning chains before scoring")
    ap.add_argument("--samples", type=int, default=1, help="chains per (image, dim) in reasoning mode")
    ap.add_argument("--batch-size", type=int, default=8, help="images per model call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples: expected ≥ 1")
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit: expected ≥ 1 (omit it to score every image), got {args.limit}")
    if args.batch_size < 1:
        ap.error(f"--batch-size: expected ≥ 1, got {args.batch_size}")

    from tqdm import tqdm

    # deferred: torch + transformers load only once args are valid (`zreward score --help` stays instant)
    from zreward.data.images import load_image
    from zreward.data.records import IMAGES_FILE, read_split
    from zreward.models.input_checks import check_scoring_inputs
    from zreward.models.scorer import load_scorer

    split = read_split(args.data)
    recs = split.images[: args.limit] if args.limit else split.images
    scorer = load_scorer(args.model, device=args.device, dtype=args.dtype, add_level_tokens=False)
    dims = scorer.resolve_dims(args.dims.split(",") if args.dims else None)
    out = Path(args.out)
    bs = args.batch_size
    where = split.root / IMAGES_FILE
    with atomic_file(out) as f, tqdm(total=len(recs), desc="score", unit="img", disable=args.no_progress) as bar:
        for s in range(0, len(recs), bs):
            chunk = recs[s: s + bs]
            names = [f"{where} (id {r.id!r})" for r in chunk]
            images = [load_image(split.image_path(r), what=n) for r, n in zip(chunk, names)]
            check_scoring_inputs(scorer, [r.prompt for r in chunk], images, [f"{n}: prompt" for n in names])
            res = scorer.score([r.prompt for r in chunk], images, dims=dims, reasoning=args.reasoning,
                               samples=args.samples)
            _write_rows(f, chunk, res, dims, args.samples)
            bar.update(len(chunk))
    print(f"scored {len(recs)} images on {dims} -> {out}")
    return 0


def _write_rows(f, chunk, res, dims: list[str], samples: int) -> None:
    """One JSONL row per record of `chunk` from its `ScoreOutput`."""
    for i, r in enumerate(chunk):
        row = {"id": r.id, "prompt": r.prompt, "overall": round(float(res.overall[i]), 6),
               "scores": {d: {"mean": round(float(res.mean[i, k]), 6), "std": round(float(res.std[i, k]), 6),
                              "probs": [round(float(p), 6) for p in res.probs[i, k]]}
                          for k, d in enumerate(dims)},
               "in_level_mass": {d: round(float(res.in_level_mass[i, k]), 6) for k, d in enumerate(dims)}}
        if res.chains is not None:
            row["chains"] = {d: res.chains[i][k * samples:(k + 1) * samples] for k, d in enumerate(dims)}
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
