"""Perception for generated ShapesWorld images: pixels -> scene dict -> oracle scores.

The ShapesWorld oracle and its simulated raters judge *scenes*; a generator produces *pixels*. This module reads a
scene back from an RGB image so that generated images can be judged by the same oracle and raters as the dataset.

What is implemented (a classical, training-free pipeline; every step is vectorised numpy/scipy):
1. **Background and ground.** The background colour is the per-channel median of the top rows. The ground
   (drawn at 85% brightness below `ground_y`) is found from pixels that are pure shades k·bg of the background
   (objects do not vote): each row's ground coverage c_r = median over such pixels of clip((1 − k)/0.15, 0, 1);
   rows below the line are fully covered and the edge row partially, so ground_y = H − Σ_r c_r (sub-pixel).
2. **Colour coverage.** For each pixel p with local background b (bg above the ground, 0.85·bg below) and each
   palette colour c: α_c = ⟨p − b, c − b⟩/|c − b|² (the anti-aliasing mix fraction) and the residual
   |p − b − α_c (c − b)|. A pixel belongs to colour c when α_c ≥ 0.5 and c has the smallest residual, which must be
   < `max_residual` (nearest-palette classification with a distance threshold). Noisy images are median-filtered
   (3×3, or 5×5 above noise 0.1) before classification.
3. **Objects.** Connected components (4-connectivity) per colour; components smaller than `min_area` px are
   dropped. Per component, the colour's coverage α is re-computed over the component's box grown by 1 px,
   unmixed against what lies behind each edge pixel (the background, or the palette colour of a touching object).
4. **Shape and box by template fitting.** Area A = Σα and the coverage centroid are preserved by anti-aliasing,
   so for each hypothesis (circle, square, triangle with fill π/4, 1, 1/2) the side is s = √(A/fill), the box
   centre is the centroid (a triangle's centroid lies s/6 below its box centre), and the hypothesis whose ideal
   coverage disagrees least (L1) with α wins. This stays accurate for objects of a few pixels (32 px images).
   Objects cut by the image border use the coverage profiles instead (bottom = last row + its max coverage,
   etc.), the side from the uncut axis, and the fill ratio of the visible part, so that `cut` is seen.
5. **Image quality.** noise = std of (p − b) over background pixels far (≥ 2 px) from any object (0 under
   0.012, i.e. quantisation level); blur from the width of the partial-coverage band along object outlines;
   warp from the template's L1 disagreement per unit outline (only when no blur is seen).
   These three are rough, linear calibrations against rendered images (see `tests/align/test_perceive.py` and
   the report for measured agreement).

Known limits (measured in the report): objects of the same colour that touch merge into one component; an object
fully hidden by another is lost; blur/warp/noise are estimated roughly (±1 rubric level on realism); shapes
below ~5 px (at 64 px canvas) are unreliable; occlusion of an object by a later one biases its fill ratio.
Coordinates are returned on a `canvas_out` px canvas (default 64, the dataset's), scaled from the image size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from zreward.data.shapes_world.oracle import DIMS, oracle_scores
from zreward.data.shapes_world.render import GROUND_SHADE
from zreward.data.shapes_world.scene import PALETTE

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
_PAL = np.asarray([PALETTE[c] for c in COLOR_NAMES], dtype=np.float64) / 255  # (6, 3)
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class PerceiveConfig:
    """Thresholds of the perception pipeline (defaults tuned on rendered 64 px ShapesWorld images)."""

    min_alpha: float = 0.5       # coverage needed for a pixel to belong to a colour
    max_residual: float = 0.12   # max |p − b − α(c − b)| in [0,1] RGB units
    min_area: float = 4.0        # px at the image's own resolution; smaller components are noise
    canvas_out: int = 64         # the scene's canvas (coordinates are scaled to it)
    median_above_noise: float = 0.03  # median-filter before classification when the estimated noise exceeds this


def _background(img: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Background colour (3,), sub-pixel ground_y, and per-pixel expected background (H, W, 3)."""
    h = img.shape[0]
    top = img[: max(2, h // 8)].reshape(-1, 3)
    bg = np.median(top, axis=0)
    # Brightness factor k of each pixel relative to bg along the bg direction; pixels that are a pure shade of
    # bg (small residual, k in [0.8, 1.05]) vote for their row's ground coverage (1 − k)/0.15. Objects do not
    # vote, so a row full of objects does not move the ground line.
    k = (img @ bg) / max(float(bg @ bg), 1e-6)  # (H, W)
    resid = np.linalg.norm(img - k[..., None] * bg, axis=-1)
    ok = (resid < 0.05) & (k > 0.78) & (k < 1.06)
    c = np.clip((1 - k) / (1 - GROUND_SHADE), 0.0, 1.0)
    cov = np.zeros(h)
    for r in range(h):  # per row (H iterations): a median over a variable-size subset
        v = c[r][ok[r]]
        cov[r] = np.median(v) if v.size else (cov[r - 1] if r else 0.0)
    cov[: h // 2] = 0.0  # the ground is in the lower half in every ShapesWorld scene
    ground_y = h - float(cov.sum())
    rows = np.clip(np.arange(h) + 1 - ground_y, 0.0, 1.0)[:, None, None]
    expected = np.broadcast_to(bg * (1 - rows) + bg * GROUND_SHADE * rows, img.shape)
    return bg, ground_y, expected


def _classify(img: np.ndarray, expected: np.ndarray, cfg: PerceiveConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel colour index (H, W) int (−1 = background), coverage of that colour (H, W), all α (H, W, 6)."""
    d = img - expected  # (H, W, 3)
    cb = _PAL[None, None] - expected[:, :, None]  # (H, W, 6, 3) colour minus local background
    alpha = (d[:, :, None] * cb).sum(-1) / np.maximum((cb * cb).sum(-1), 1e-6)  # (H, W, 6)
    resid = np.linalg.norm(d[:, :, None] - alpha[..., None] * cb, axis=-1)  # (H, W, 6)
    resid = np.where(alpha >= cfg.min_alpha, resid, np.inf)
    idx = resid.argmin(-1)
    best = np.take_along_axis(resid, idx[..., None], -1)[..., 0]
    label = np.where(best < cfg.max_residual, idx, -1)
    a = np.clip(np.take_along_axis(alpha, idx[..., None], -1)[..., 0], 0.0, 1.0)
    return label, a, alpha


def _ideal_mask(shape: str, x: float, y: float, s: float, h: int, w: int) -> np.ndarray:
    """Coverage (H, W) of the ideal shape (2x2 supersampling is enough for an agreement measure)."""
    offs = np.array([0.25, 0.75])
    xs = (np.arange(w)[:, None] + offs).reshape(-1) - x
    ys = (np.arange(h)[:, None] + offs).reshape(-1) - y
    u, v = np.meshgrid(xs, ys)
    r = s / 2
    if shape == "circle":
        inside = u * u + v * v <= r * r
    elif shape == "square":
        inside = (np.abs(u) <= r) & (np.abs(v) <= r)
    else:
        inside = (v <= r) & (np.abs(u) <= (v + r) / 2)
    return inside.reshape(h, 2, w, 2).mean(axis=(1, 3))


PERIMETER = {"circle": math.pi, "square": 4.0, "triangle": 1 + math.sqrt(5)}  # outline length per unit side
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # area per unit side squared


def _fit_template(a: np.ndarray, area: float, x0: int, y0: int) -> tuple[str, float, float, float, float]:
    """Best-fitting ideal shape for a coverage patch.

    For each shape hypothesis the side follows from the area (s = sqrt(A / fill)) and the box centre from the
    coverage centroid (a triangle's centroid lies s/6 below its box centre); the hypothesis with the smallest
    L1 disagreement between coverage and the ideal shape wins. Area and centroid are preserved by anti-aliasing,
    so this stays accurate for objects of only a few pixels, unlike extents measured on edge pixels.

    Args:
        a: (h, w) coverage of one object in its local box whose top-left pixel is (x0, y0).
    Returns:
        (shape, side, x centre, y centre, L1 disagreement) in image px.
    """
    h, w = a.shape
    cx = float((a.sum(0) * (np.arange(w) + 0.5)).sum()) / area
    cy = float((a.sum(1) * (np.arange(h) + 0.5)).sum()) / area
    best = None
    for shape, f in FILL.items():
        s = math.sqrt(area / f)
        yc = cy - s / 6 if shape == "triangle" else cy
        err = float(np.abs(a - _ideal_mask(shape, cx, yc, s, h, w)).sum())
        if best is None or err < best[4]:
            best = (shape, s, cx + x0, yc + y0, err)
    return best


def perceive_scene(image, cfg: PerceiveConfig | None = None) -> dict:
    """Read a ShapesWorld scene from an image.

    Args:
        image: (H, W, 3) uint8 / float in [0, 1] numpy array, or a (3, H, W) torch tensor in [0, 1].
        cfg: thresholds (defaults: `PerceiveConfig()`).

    Returns:
        A scene dict (spec schema) on a `cfg.canvas_out` canvas, plus `"perceived": True`.
    """
    cfg = cfg or PerceiveConfig()
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
        raise ValueError(f"perceive_scene: image has shape {img.shape}, expected a square (H, W, 3) image")
    img = img.astype(np.float64) / 255 if img.dtype == np.uint8 else np.nan_to_num(img.astype(np.float64), nan=0.5)
    h, w = img.shape[:2]
    scale = cfg.canvas_out / h
    bg, ground_y, expected = _background(img)

    label, cov, _ = _classify(img, expected, cfg)
    fg = ndimage.binary_dilation(label >= 0, iterations=2)
    resid_bg = (img - expected)[~fg]
    noise = float(resid_bg.std()) if resid_bg.size > 16 else 0.0
    if noise > cfg.median_above_noise:
        m = 3 if noise < 0.1 else 5  # heavy noise needs a wider window to classify colours
        smooth = ndimage.median_filter(img, size=(m, m, 1))
        label, cov, _ = _classify(smooth, expected, cfg)
        fg = ndimage.binary_dilation(label >= 0, iterations=2)
        resid_bg = (img - expected)[~fg]
        noise = float(resid_bg.std()) if resid_bg.size > 16 else 0.0
    noise = 0.0 if noise < 0.012 else min(noise, 0.3)

    objects, band_ratios, warp_scores = [], [], []
    for ci, cname in enumerate(COLOR_NAMES):
        comp, n = ndimage.label(label == ci)
        if n == 0:
            continue
        for k, sl in enumerate(ndimage.find_objects(comp), start=1):
            member = comp[sl] == k
            if member.sum() < cfg.min_area:
                continue
            # coverage of this colour in the component's box grown by 1 px (anti-aliased edge pixels)
            y0, y1 = max(0, sl[0].start - 1), min(h, sl[0].stop + 1)
            x0, x1 = max(0, sl[1].start - 1), min(w, sl[1].stop + 1)
            grown = ndimage.binary_dilation(comp[y0:y1, x0:x1] == k, iterations=1)
            # Unmix against what lies behind each edge pixel: the background, or the palette colour of another
            # object it touches (an object resting on another is anti-aliased against that object).
            under = expected[y0:y1, x0:x1].copy()
            other = (label[y0:y1, x0:x1] >= 0) & (label[y0:y1, x0:x1] != ci)
            under[other] = _PAL[label[y0:y1, x0:x1][other]]
            d = img[y0:y1, x0:x1] - under
            cb = _PAL[ci] - under
            a = np.clip((d * cb).sum(-1) / np.maximum((cb * cb).sum(-1), 1e-6), 0, 1) * grown  # (h', w')
            prof_y, prof_x = a.max(1), a.max(0)
            ry, rx = np.flatnonzero(prof_y > 0.05), np.flatnonzero(prof_x > 0.05)
            top = y0 + ry[0] + 1 - prof_y[ry[0]]
            bottom = y0 + ry[-1] + prof_y[ry[-1]]
            left = x0 + rx[0] + 1 - prof_x[rx[0]]
            right = x0 + rx[-1] + prof_x[rx[-1]]
            # max, not mean: a triangle's apex row is nearly empty, so its visible height is short at low res
            s = max(bottom - top, right - left, 1.0)
            vis_box = max((bottom - top) * (right - left), 1.0)  # fill ratio is taken on the visible part
            # An object cut by the image border: its visible extent along that axis is short; take the side
            # from the other axis and let the box reach past the border (so that `cut` is seen).
            at_l, at_r, at_t, at_b = x0 == 0 and rx[0] == 0, x1 == w and rx[-1] == x1 - x0 - 1, \
                y0 == 0 and ry[0] == 0, y1 == h and ry[-1] == y1 - y0 - 1
            border = at_l or at_r or at_t or at_b
            if (at_l or at_r) and not (at_t or at_b):
                s = bottom - top
                left, right = (right - s, right) if at_l else (left, left + s)
            elif (at_t or at_b) and not (at_l or at_r):
                s = right - left
                top, bottom = (bottom - s, bottom) if at_t else (top, top + s)
            area = float(a.sum())
            partial = float(((a > 0.1) & (a < 0.9)).sum())
            if border:  # cut by the border: shape from the visible part's fill ratio, box from the profiles
                fill = area / vis_box
                shape = "triangle" if fill < 0.64 else ("circle" if fill < 0.89 else "square")
                x, y = (left + right) / 2, bottom - s / 2
                warp_scores.append(0.0)  # the outline is incomplete: no blur/warp evidence from this object
            else:
                shape, s, x, y, err = _fit_template(a, area, x0, y0)
                perim = PERIMETER[shape] * s
                band_ratios.append(partial / max(perim, 1.0))
                warp_scores.append(err / max(perim, 1.0))
            objects.append({"shape": shape, "color": cname, "size": round(s * scale, 3),
                            "x": round(x * scale, 3), "y": round(y * scale, 3), "warp": 0.0})
    blur = _blur_from_band(band_ratios)
    warp = 0.0 if blur > 0 else _warp_from_outline(warp_scores)
    for o, ws in zip(objects, warp_scores):
        o["warp"] = warp if ws >= WARP_OUTLINE_MIN else 0.0
    bg255 = [int(round(v)) for v in np.clip(bg * 255, 0, 255)]
    return {"canvas": cfg.canvas_out, "background": bg255, "ground_y": round(ground_y * scale, 3),
            "objects": objects, "noise": round(noise, 4), "blur": blur, "perceived": True}


# Calibration of the rough quality estimates (fitted on rendered images; see module docstring).
BAND_CLEAN = 0.65     # partial-band / outline ratio of a clean anti-aliased object (median over val objects)
BAND_PER_BLUR = 1.5   # growth of that ratio per px of blur sigma (linear fit below 1 px; saturates above)
WARP_OUTLINE_MIN = 0.6  # outline disagreement above which an object counts as warped (90th pct of clean: 0.54)
WARP_PER_OUTLINE = 0.8   # warp amplitude per unit of disagreement above the threshold


def _blur_from_band(ratios: list[float]) -> float:
    if not ratios:
        return 0.0
    b = (float(np.median(ratios)) - BAND_CLEAN) / BAND_PER_BLUR
    return 0.0 if b < 0.15 else round(min(b, 2.0), 2)


def _warp_from_outline(scores: list[float]) -> float:
    if not scores:
        return 0.0
    m = max(scores)
    return 0.0 if m < WARP_OUTLINE_MIN else round(min(1.0, WARP_PER_OUTLINE * (m - WARP_OUTLINE_MIN) + 0.2), 2)


def perceived_scores(images, prompts: list) -> np.ndarray:
    """Oracle scores of perceived scenes.

    Args:
        images: (B, 3, H, W) tensor in [0, 1] or a list of (H, W, 3) arrays.
        prompts: B prompts (text or spec dicts).

    Returns:
        (B, 4) float array, columns in `DIMS` order.
    """
    out = np.zeros((len(prompts), len(DIMS)))
    for i, p in enumerate(prompts):  # per image: perception is a per-image classical pipeline
        sc = oracle_scores(perceive_scene(images[i]), p)
        out[i] = [sc[d] for d in DIMS]
    return out


def perception_agreement(split: str | Path, n: int | None = None, size: int | None = None) -> dict:
    """Agreement of perceived-scene oracle scores with the true oracle on a rendered ShapesWorld split.

    Args:
        split: split dir with images.jsonl (records carry `scene` and `meta.oracle`).  n: first n images.
        size: box-downsample images to this side first (the generator's resolution), None = as stored.

    Returns:
        {"n", "objects_exact": fraction of images whose on-canvas (color, shape) multiset is recovered,
         "dims": {dim: {"exact": match rate of the 9-level score, "mean_abs": mean |Δ|}},
         "clean": the same restricted to images with mutation "clean", "by_mutation": {kind: {dim: exact}}}.
    """
    import json

    from PIL import Image

    root = Path(split)
    rows = []
    with open(root / "images.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            im = Image.open(root / rec["image"]).convert("RGB")
            img = np.asarray(im.resize((size, size), Image.BOX) if size and im.size != (size, size) else im)
            sc = perceive_scene(img, PerceiveConfig(canvas_out=rec["scene"]["canvas"]))
            pred = oracle_scores(sc, rec["prompt_spec"] or rec["prompt"])
            c = rec["scene"]["canvas"]
            truth = sorted((o["color"], o["shape"]) for o in rec["scene"]["objects"]
                           if o["x"] + o["size"] / 2 > 0 and o["x"] - o["size"] / 2 < c)
            seen = sorted((o["color"], o["shape"]) for o in sc["objects"])
            rows.append((rec["meta"].get("mutations", []), truth == seen,
                         np.array([rec["meta"]["oracle"][d] for d in DIMS]), np.array([pred[d] for d in DIMS])))
            if n and len(rows) >= n:
                break

    def summary(rs: list) -> dict:
        t, p = np.stack([r[2] for r in rs]), np.stack([r[3] for r in rs])
        return {"n": len(rs), "objects_exact": round(float(np.mean([r[1] for r in rs])), 4),
                "dims": {d: {"exact": round(float((t[:, j] == p[:, j]).mean()), 4),
                             "mean_abs": round(float(np.abs(t[:, j] - p[:, j]).mean()), 4)}
                         for j, d in enumerate(DIMS)}}

    out = summary(rows)
    clean = [r for r in rows if r[0] == ["clean"]]
    out["clean"] = summary(clean) if clean else None
    kinds = sorted({k for r in rows for k in r[0]})
    out["by_mutation"] = {k: summary([r for r in rows if k in r[0]]) for k in kinds}
    return out
