"""`zreward data ...`: convert public preference / rating datasets into canonical split directories.

    zreward data convert --format F --src PATH --out SPLIT_DIR [--images-root DIR] [--skip-bad] [--overwrite]
                         [--max-pixels N] [--limit N]
    zreward data formats

Each format lives in `zreward.data.formats.<name>` (module docstring = the field layout it assumes) and exposes
`DIMS`, `EXTRA` and `run(src, sink)`. Conversion is atomic (nothing is left behind on failure); a bad record stops
it with `file:record: field: expected ...` unless `--skip-bad`, which skips and reports every bad record with its
reason. Images are validated by decoding and copied into SPLIT_DIR/images so the split is self-contained.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from zreward.data.formats._common import ConvertOptions, Sink, convert_counts
from zreward.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from zreward.data.records import DatasetInfo, RecordError
from zreward.data.split_writer import SplitWriter

# name -> (module, what --src is)
FORMATS: dict[str, tuple[str, str]] = {
    "hpdv2": ("zreward.data.formats.hpdv2",
              "HPDv2 train.json or test.json; images in <dir>/<train|test>/ or <dir>/"),
    "hpdv3": ("zreward.data.formats.hpdv3",
              "HPDv3 JSON/JSONL (e.g. train.json, test.json); path1/path2 relative to its directory"),
    "pickapic": ("zreward.data.formats.pickapic",
                 "Pick-a-Pic v2 parquet file or directory of parquet shards (jpg_0/jpg_1 bytes embedded)"),
    "imagerewarddb": ("zreward.data.formats.imagerewarddb",
                      "ImageRewardDB metadata-<split>.parquet (or a per-part JSON); image_path relative to "
                      "the repo root"),
    "imagereward_bench": ("zreward.data.formats.imagereward_bench",
                          "ImageReward's benchmark data/test.json (ranked generations per prompt); images in "
                          "<dir>/test_images/ (also read by --format imagerewarddb)"),
    "genai_bench": ("zreward.data.formats.genai_bench",
                    "TIGER-Lab GenAI-Bench image_generation parquet file/dir (or JSON with image paths)"),
    "genai_bench_ratings": ("zreward.data.formats.genai_bench_ratings",
                            "BaiqiL GenAI-Bench(-1600) parquet file/dir with HumanRatings and one image per model"),
    "agiqa3k": ("zreward.data.formats.agiqa3k", "AGIQA-3K data.csv; images next to it or in <dir>/images/"),
    "mmrb2": ("zreward.data.formats.mmrb2", "MMRB2 benchmark/t2i.json; images/ relative to its directory"),
}


def convert(fmt: str, src: str | Path, out: str | Path, *, opts: ConvertOptions | None = None,
            overwrite: bool = False) -> tuple[dict, list[str]]:
    """Convert one dataset file/directory into a split directory.

    Returns:
        (counts, skipped): the summary also stored in dataset.json under "conversion", and the messages of the
        skipped bad records (empty unless opts.skip_bad).
    Raises:
        RecordError: a bad record (without skip_bad), a missing source, or nothing convertible.
        FileExistsError: `out` exists and is not empty (without overwrite).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {sorted(FORMATS)}, got {fmt!r}")
    opts = opts or ConvertOptions()
    mod = importlib.import_module(FORMATS[fmt][0])
    src = Path(src)
    if not src.exists():
        raise RecordError(f"{src}: src: expected an existing file or directory ({FORMATS[fmt][1]})")
    info = DatasetInfo(name=fmt, dims=list(mod.DIMS), source=str(src.resolve()),
                       extra={"format": fmt, **mod.EXTRA})
    with SplitWriter(out, info, overwrite=overwrite) as w:
        sink = Sink(w, opts)
        mod.run(src, sink)
        if w.n_images == 0:
            raise RecordError(f"{src}: records: expected at least one convertible record, converted none "
                              f"({len(sink.skipped)} skipped as bad, {sum(sink.notes.values())} dropped by "
                              f"protocol)")
        counts = convert_counts(sink)
        info.extra["conversion"] = counts  # written by SplitWriter.close()
    return counts, sink.skipped


def _parser() -> argparse.ArgumentParser:
    fmt_help = "\n".join(f"  {k:<20} {v[1]}" for k, v in FORMATS.items())
    p = argparse.ArgumentParser(prog="zreward data", description="Convert public datasets to canonical records.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert one dataset file/directory into a split directory",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Convert a public dataset into a canonical split directory.",
                       epilog=f"formats (--format) and what --src is:\n{fmt_help}")
    c.add_argument("--format", required=True, choices=sorted(FORMATS), metavar="FORMAT",
                   help="dataset format, one of: " + ", ".join(FORMATS))
    c.add_argument("--src", required=True, type=Path, help="the file or directory the original dataset ships")
    c.add_argument("--out", required=True, type=Path, help="split directory to create (atomic)")
    c.add_argument("--images-root", type=Path, default=None,
                   help="base directory for relative image paths (default: as documented per format)")
    c.add_argument("--skip-bad", action="store_true", help="skip bad records (reported with reasons) instead "
                                                           "of stopping at the first one")
    c.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    c.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (decompression bombs); 0 disables "
                        f"(default {DEFAULT_MAX_PIXELS})")
    c.add_argument("--limit", type=int, default=None, help="convert only the first N source records")
    sub.add_parser("formats", help="list the supported formats")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "formats":
        for k, (_, h) in FORMATS.items():
            print(f"{k:<20} {h}")
        return 0
    opts = ConvertOptions(images_root=args.images_root, skip_bad=args.skip_bad,
                          max_pixels=None if args.max_pixels == 0 else args.max_pixels, limit=args.limit)
    try:
        counts, skipped = convert(args.format, args.src, args.out, opts=opts, overwrite=args.overwrite)
    except (RecordError, ImageLoadError, FileExistsError) as e:
        print(f"zreward data convert: error: {e}", file=sys.stderr)
        if not args.skip_bad and isinstance(e, (RecordError, ImageLoadError)):
            print("(use --skip-bad to skip bad records and report them)", file=sys.stderr)
        return 1
    print(f"converted {counts['source_records']} {args.format} records -> {counts['images']} images, "
          f"{counts['pairs']} pairs in {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} bad records:")
        for reason, n in counts["skip_reasons"].items():
            print(f"  {n} x {reason}")
        for msg in skipped[:5]:
            print(f"  e.g. {msg}")
    for reason, n in counts["dropped_by_protocol"].items():
        print(f"dropped by protocol: {n} x {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
