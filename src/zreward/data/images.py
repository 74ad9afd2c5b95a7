"""The single image loader used everywhere in zreward (records, loaders, trainers, eval, serving).

`load_image` decodes PNG, JPEG or WebP (from a path or from bytes) into an 8-bit RGB `PIL.Image`:
- the EXIF Orientation tag is applied (`ImageOps.exif_transpose`), so what we score is what a viewer shows;
- modes are converted explicitly: L/1/CMYK/YCbCr → RGB via PIL; LA/RGBA/PA/P-with-transparency are alpha-composited
  on **white** (not PIL's default of dropping alpha, which exposes whatever colour sits under transparent pixels);
  16-bit grayscale (`I;16*`, and `I`, which is assumed to hold 16-bit values) is scaled by 255/65535, not clipped
  at 255 as `Image.convert("RGB")` would do. CMYK uses PIL's naive inversion (embedded ICC profiles are ignored);
- a pixel-count limit (`max_pixels`, default 64 Mpx, `None` disables) is checked from the header, *before* the
  pixel data are decoded, against decompression bombs. PIL's own global bomb limit is honoured when it is lower and
  bypassed (under a lock, restored afterwards) only when the caller explicitly allows more pixels;
- every failure (missing file, unknown/unsupported format, truncated or corrupt data, too many pixels) raises
  `ImageLoadError` whose message starts with `what` (the record the image belongs to) and names the path.

`image_to_tensor` turns a loaded image into a float tensor (3, H, W) in [0, 1], `image_to_uint8` into the uint8
tensor (3, H, W) the trainers keep (torch imported lazily); `cap_pixels` downscales an image to at most a pixel
count (the trainers' `data.max_pixels`), aspect ratio kept.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int | None = 64 * 1024 * 1024
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
EXTENSIONS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}

_PIL_LIMIT_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the record (`what`) and the file."""


def _label(src: str | os.PathLike | bytes, what: str | None) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        origin = f"<{len(src)} bytes>"
    else:
        origin = str(src)
    return f"{what}: image {origin}" if what else f"image {origin}"


def _open(src: str | os.PathLike | bytes, allow_over_pil_limit: bool) -> Image.Image:
    fp = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else Path(src)
    with warnings.catch_warnings():
        # our own max_pixels check replaces PIL's warning-level check
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fp, formats=FORMATS)
        except Image.DecompressionBombError:
            if not allow_over_pil_limit:
                raise
            if isinstance(fp, io.BytesIO):
                fp.seek(0)
            # The caller allowed more pixels than PIL's process-wide limit: lift it for this one open only.
            with _PIL_LIMIT_LOCK:
                old = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    return Image.open(fp, formats=FORMATS)
                finally:
                    Image.MAX_IMAGE_PIXELS = old


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB (alpha over white, 16-bit scaled down)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a, 0, 65535) * (255.0 / 65535.0)
        g = Image.fromarray(np.round(a).astype(np.uint8), mode="L")
        return g.convert("RGB")
    if mode == "F":
        # float images: assumed in [0, 1] (PIL has no convention; none of PNG/JPEG/WebP produce this mode)
        a = np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0) * 255.0
        return Image.fromarray(np.round(a).astype(np.uint8), mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info) \
        or (mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(src: str | os.PathLike | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               what: str | None = None) -> Image.Image:
    """Decode an image file or bytes into an 8-bit RGB image with EXIF orientation applied.

    Args:
        src: path to a PNG/JPEG/WebP file, or the encoded bytes.
        max_pixels: refuse images with more than this many pixels (width * height), checked before decoding;
            None disables the check (and PIL's own global limit).
        what: names the record the image belongs to, e.g. "train/images.jsonl:12 (id p0001_c2)"; it starts
            every error message.

    Returns:
        A fully loaded `PIL.Image.Image` in mode "RGB" (independent of the source file, which is closed).

    Raises:
        ImageLoadError: missing file, unsupported format, truncated/corrupt data, or too many pixels.
    """
    label = _label(src, what)
    if not isinstance(src, (bytes, bytearray, memoryview)):
        p = Path(src)
        try:
            is_file = p.is_file()
        except (OSError, ValueError) as e:  # ENAMETOOLONG, a path that is not valid text, ...
            raise ImageLoadError(f"{label}: expected a readable image path "
                                 f"({e.strerror if isinstance(e, OSError) else type(e).__name__})") from None
        if not is_file:
            raise ImageLoadError(f"{label}: expected an existing image file, "
                                 f"{'it is a directory' if p.is_dir() else 'file not found'}")
    elif len(src) == 0:
        raise ImageLoadError(f"{label}: expected encoded image bytes, got an empty buffer")
    allow_more = max_pixels is None or (Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS)
    try:
        im = _open(src, allow_more)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{label}: expected at most PIL's limit of pixels, {e}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label}: expected a PNG, JPEG or WebP image, the data is not one "
                             f"(unknown format or corrupt header)") from None
    except Exception as e:  # PIL plugins raise a zoo of types (struct.error, SyntaxError, ...) on malformed data
        raise ImageLoadError(f"{label}: expected a readable PNG, JPEG or WebP image "
                             f"({type(e).__name__}: {e})") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageLoadError(f"{label}: expected a non-empty image, size is {w}x{h}")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageLoadError(f"{label}: expected at most {max_pixels} pixels (decompression-bomb limit, "
                                 f"max_pixels), image is {w}x{h} = {w * h}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                out = ImageOps.exif_transpose(im)  # a new image (or a copy) in the same mode
            out = _to_rgb(out)
            out.load()
        except Exception as e:  # truncated data, bad EXIF, broken chunks: all a bad file, never a crash
            raise ImageLoadError(f"{label}: expected a complete {im.format} image, decoding failed "
                                 f"({type(e).__name__}: {e})") from None
    return out


def probe_image_bytes(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      what: str | None = None) -> str:
    """Validate encoded image bytes by fully decoding them with `load_image`; return the file extension.

    Returns:
        ".png", ".jpg" or ".webp" according to the detected format (not the source file name).
    """
    load_image(data, max_pixels=max_pixels, what=what)
    with _open(data, allow_over_pil_limit=True) as im:  # header only; the pixel limit was checked above
        return EXTENSIONS[im.format]


def image_to_tensor(img: Image.Image):
    """RGB image → float32 tensor (3, H, W) in [0, 1].

    Args:
        img: an RGB `PIL.Image.Image` (as returned by `load_image`).
    Returns:
        torch.FloatTensor of shape (3, H, W).
    """
    import torch

    if img.mode != "RGB":
        raise ValueError(f"image_to_tensor: expected an RGB image (use load_image), got mode {img.mode!r}")
    a = np.array(img, dtype=np.uint8, copy=True)  # (H, W, 3), writable for from_numpy
    return torch.from_numpy(a).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def cap_pixels(img: Image.Image, max_pixels: int | None) -> Image.Image:
    """Downscale `img` (bicubic, aspect ratio kept) so that width * height <= `max_pixels`; smaller images and
    `max_pixels=None` return `img` itself.

    The new size is (floor(w·s), floor(h·s)) with s = sqrt(max_pixels / (w·h)), each side at least 1 pixel (the
    width is trimmed to max_pixels // height where that still exceeds the cap).
    """
    w, h = img.size
    if max_pixels is None or w * h <= max_pixels:
        return img
    s = (max_pixels / (w * h)) ** 0.5
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    if nw * nh > max_pixels:  # float rounding, or a side clamped to 1 px: trim the other side
        nw = max(1, max_pixels // nh)
    return img.resize((nw, nh), Image.Resampling.BICUBIC)


def image_to_uint8(img: Image.Image):
    """RGB image → uint8 tensor (3, H, W), the exact pixel values (`image_to_tensor` · 255 rounds back to them)."""
    import torch

    if img.mode != "RGB":
        raise ValueError(f"image_to_uint8: expected an RGB image (use load_image), got mode {img.mode!r}")
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
