"""Differentiable image preprocessing: image tensor `(B, 3, H, W)` in [0, 1] → each family's `pixel_values`.

Reimplements, with torch ops only, the HF image processors the supported families use, so that the reward is
differentiable with respect to the pixels and scoring PIL images goes through the very same code:
- "qwen" (Qwen2VLImageProcessor, also used by Qwen2.5-VL, Qwen3-VL and Qwen3.5): `smart_resize` to multiples of
  patch·merge within [min_pixels, max_pixels], rescale, normalise, then the flat patch layout
  `(grid_h·grid_w, C·T·P·P)` with the frame repeated `temporal_patch_size` times, plus `image_grid_thw = (1, gh, gw)`.
- "clip" (CLIPImageProcessor for LLaVA: shortest-edge resize + centre crop; Gemma3ImageProcessor: resize to
  height×width): `(B, 3, S, S)`.

Equality with the HF processors: exact (up to float32 round-off) when no resize is needed. With a resize, HF resizes
the uint8 image with PIL (bicubic / bilinear, antialiased, rounded to uint8); we use `F.interpolate(...,
antialias=True)` on floats, which differs by PIL's uint8 rounding and edge handling: measured mean |Δ| ≈ 0.003 and
max |Δ| ≈ 0.1 in normalised units on skimage photos (tested with tolerances mean < 0.01).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL enum → interpolate mode


@dataclass
class PixelSpec:
    """Preprocessing parameters, read from a checkpoint's `preprocessor_config.json`.

    Attributes:
        kind: "qwen" or "clip".
        mean, std: per-channel normalisation.
        rescale_factor: multiply by this × 255 (HF rescales uint8 by 1/255; our tensors are already in [0, 1]).
        resample: "bicubic" or "bilinear".
        patch_size, merge_size, temporal_patch_size, min_pixels, max_pixels: Qwen layout.
        shortest_edge: CLIP resize target (None → resize to height×width directly).
        height, width: final size for "clip".
    """

    kind: str
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    rescale_factor: float = 1 / 255
    resample: str = "bicubic"
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    shortest_edge: int | None = None
    height: int = 224
    width: int = 224

    @classmethod
    def from_processor_dict(cls, d: dict, kind: str, where: str = "preprocessor_config.json") -> PixelSpec:
        """Build from the JSON dict of an HF image processor config."""
        if "image_processor" in d and isinstance(d["image_processor"], dict):  # v5 processor_config.json
            d = d["image_processor"]
        for flag in ("do_pad", "do_pan_and_scan"):
            if d.get(flag):
                raise ValueError(f"{where}: {flag}=true is not supported by zreward's differentiable preprocessing "
                                 f"(expected false or absent)")
        if d.get("do_center_crop") is False and kind == "clip" and "shortest_edge" in (d.get("size") or {}):
            raise ValueError(f"{where}: do_center_crop=false with a shortest_edge size is not supported")
        try:
            spec = cls(kind=kind, mean=list(d.get("image_mean", [0.5] * 3)), std=list(d.get("image_std", [0.5] * 3)),
                       rescale_factor=float(d.get("rescale_factor", 1 / 255)),
                       resample=_RESAMPLE.get(int(d.get("resample", 3)), "bicubic"))
            size = d.get("size") or {}
            if kind == "qwen":
                spec.patch_size = int(d.get("patch_size", 14))
                spec.merge_size = int(d.get("merge_size", 2))
                spec.temporal_patch_size = int(d.get("temporal_patch_size", 2))
                spec.min_pixels = int(d.get("min_pixels") or size.get("shortest_edge", spec.min_pixels))
                spec.max_pixels = int(d.get("max_pixels") or size.get("longest_edge", spec.max_pixels))
            elif "shortest_edge" in size:
                crop = d.get("crop_size") or {}
                spec.shortest_edge = int(size["shortest_edge"])
                spec.height = int(crop.get("height", spec.shortest_edge))
                spec.width = int(crop.get("width", spec.shortest_edge))
            else:
                spec.height, spec.width = int(size["height"]), int(size["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: cannot read image preprocessing parameters ({e!r}); expected an HF image "
                             f"processor config with size / image_mean / image_std") from e
        return spec

    @classmethod
    def from_json_file(cls, path, kind: str) -> PixelSpec:
        return cls.from_processor_dict(json.loads(open(path).read()), kind, where=str(path))


def pil_to_tensor(img) -> torch.Tensor:
    """PIL image → (3, H, W) float32 in [0, 1] (RGB)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(x: torch.Tensor):
    """(3, H, W) float in [0, 1] → PIL RGB image (rounded to uint8; the inverse of `pil_to_tensor` on its images)."""
    arr = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


# Qwen2-VL's processor refuses images whose long side is more than 200× the short side; zreward applies the same
# bound to every family (a CLIP-style shortest-edge resize of a 1×16M image would allocate gigabytes).
MAX_ASPECT_RATIO = 200


def check_image_size(height: int, width: int) -> None:
    """Raise ValueError when preprocessing cannot take an image of `height`×`width` pixels (checked before any
    model call, so that a server can refuse one request instead of failing a whole batch)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size: expected at least 1×1 pixels, got {width}×{height} (width×height)")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"image aspect ratio: expected at most {MAX_ASPECT_RATIO}:1, got {width}×{height} "
                         f"(width×height)")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: multiples of `factor`, area within [min_pixels, max_pixels], aspect kept."""
    check_image_size(height, width)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(B, 3, H, W) → (B, 3, h, w); a no-op (exact) when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    # PIL clamps to the uint8 range after resampling; bicubic overshoots, so clamp too.
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)


def _normalize(x: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * (spec.rescale_factor * 255.0) - mean) / std


def qwen_pixels(images: torch.Tensor, spec: PixelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen patch layout for a batch of same-size images.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        spec: PixelSpec of kind "qwen".

    Returns:
        patches: (B, N, 3·T·P·P) with N = gh·gw (row order of HF's flat `pixel_values`), and
        grid: (B, 3) long `image_grid_thw` rows (1, gh, gw).
    """
    b, c, h, w = images.shape
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    rh, rw = smart_resize(h, w, p * m, spec.min_pixels, spec.max_pixels)
    x = _normalize(_resize(images, (rh, rw), spec.resample), spec)
    gh, gw = rh // p, rw // p
    x = x.reshape(b, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)  # b, gh/m, gw/m, m, m, c, p, p
    x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)  # repeat the frame over the temporal patch
    patches = x.reshape(b, gh * gw, c * t * p * p)
    grid = torch.tensor([1, gh, gw], dtype=torch.long).expand(b, 3).clone()
    return patches, grid


def clip_pixels(images: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """CLIP / SigLIP-style pixels: (B, 3, H, W) in [0, 1] → (B, 3, height, width) normalised."""
    _, _, h, w = images.shape
    check_image_size(h, w)
    if spec.shortest_edge is not None:
        # CLIP: shortest edge → shortest_edge (HF rounds the long edge with int()), then centre crop.
        s = spec.shortest_edge
        nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        x = _resize(images, (nh, nw), spec.resample)
        top, left = (nh - spec.height) // 2, (nw - spec.width) // 2
        x = x[..., top: top + spec.height, left: left + spec.width]
    else:
        x = _resize(images, (spec.height, spec.width), spec.resample)
    return _normalize(x, spec)


@dataclass
class PixelInputs:
    """Per-image preprocessed pixels, ready to be gathered into a batch of sequences.

    Attributes:
        values: per image, (N_i, 3·T·P·P) patches ("qwen") or (3, S, S) ("clip").
        grids: per image, (3,) long image_grid_thw ("qwen") or None.
        n_tokens: per image, number of image tokens in the text.
        source: per image, the (3, H, W) [0, 1] image the values were made from (detached), for rollout engines
            that preprocess images themselves (vLLM); None when unknown.
    """

    values: list[torch.Tensor]
    grids: list[torch.Tensor] | None
    n_tokens: list[int]
    source: list[torch.Tensor] | None = None


def prepare_pixels(images: torch.Tensor | list[torch.Tensor], spec: PixelSpec,
                   tokens_per_image: int | None = None) -> PixelInputs:
    """Preprocess images (a same-size batch is done in one vectorised call; a list may mix sizes).

    Args:
        images: (B, 3, H, W) tensor or list of (3, H_i, W_i) tensors, float in [0, 1].
        spec: preprocessing parameters.
        tokens_per_image: image tokens per image for "clip" families (fixed by the model config).

    Returns:
        PixelInputs (differentiable w.r.t. `images`).
    """
    if isinstance(images, torch.Tensor):
        groups = [images]
    else:
        groups = [im.unsqueeze(0) for im in images]
    source = [im.detach() for g in groups for im in g.unbind(0)] if all(g.ndim == 4 for g in groups) else None
    values, grids, n_tok = [], [], []
    for g in groups:
        if g.ndim != 4 or g.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) float tensors in [0, 1], got shape {tuple(g.shape)}")
        if spec.kind == "qwen":
            patches, grid = qwen_pixels(g, spec)
            values += list(patches.unbind(0))
            grids += list(grid.unbind(0))
            n_tok += [int(gr.prod()) // spec.merge_size**2 for gr in grid]
        else:
            values += list(clip_pixels(g, spec).unbind(0))
            n_tok += [int(tokens_per_image)] * g.shape[0]
    return PixelInputs(values=values, grids=grids if spec.kind == "qwen" else None, n_tokens=n_tok, source=source)
