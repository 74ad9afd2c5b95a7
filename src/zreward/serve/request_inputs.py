"""The inputs of one `POST /score` request, checked and decoded before its job may join a batch.

Everything here raises `fastapi.HTTPException` whose detail names the field and index (see `zreward.serve.app`
for the status codes): prompt text, reserved tokens and token limits (`zreward.models.input_checks`), base64
images, server-side paths under `--allowed-root` (symlinks and `..` resolved; unusable paths are a 400, never a
500), decoding limits, and the preprocessing's size constraints. `prepare` runs in a worker thread.
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import HTTPException

from zreward.data.images import ImageLoadError, load_image
from zreward.models.input_checks import InputError, check_image, check_prompt, check_text, prompt_tokens

if TYPE_CHECKING:  # the app module defines these and imports this one
    from zreward.serve.app import ScoreRequest, ServeConfig


def bad(status: int, field: str, msg: str) -> HTTPException:
    return error(status, f"{field}: {msg}")


def error(status: int, detail: str, headers: dict | None = None) -> HTTPException:
    # A detail may quote client text; a lone surrogate in it would make the JSON response itself fail (a 500).
    detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return HTTPException(status_code=status, detail=detail, headers=headers)


def b64decode(s: str, field: str) -> bytes:
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or not head.endswith(";base64"):
            raise bad(400, field, "expected a base64 data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad(400, field, f"expected base64-encoded image bytes ({e})") from None


def resolve_under(root: Path, rel: str, field: str) -> Path:
    """Resolve a client path inside `root` (symlinks and `..` resolved first); 403 when it escapes."""
    if "\x00" in rel or not rel:
        raise bad(400, field, "expected a non-empty path without NUL bytes")
    try:
        check_text(rel, field)
        real_root = root.resolve()
        p = (real_root / rel).resolve()  # an absolute `rel` replaces the root and is then checked like any other
    except InputError as e:
        raise bad(400, field, e.msg.replace("prompt", "path")) from None
    except (OSError, RuntimeError, ValueError) as e:  # ENAMETOOLONG, ELOOP ("Symlink loop"), ...
        raise bad(400, field, f"cannot resolve this path ({os_reason(e)})") from None
    if not p.is_relative_to(real_root):
        raise bad(403, field, "path is outside the server's allowed root")
    return p


def os_reason(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__


def check_total(out: list, cfg: ServeConfig, what: str) -> None:
    total = sum(im.width * im.height for im in out)
    if total > cfg.max_request_pixels:
        raise bad(413, what, f"the request's images decode to more than {cfg.max_request_pixels} pixels "
                              f"(max_request_pixels); send fewer or smaller images per request")


def check_prompts(req: ScoreRequest, cfg: ServeConfig, tokenizer, reserved: list[str]) -> list[int]:
    """Text, reserved tokens and token limits of the prompts (422 naming the index); returns the token counts."""
    try:
        for i, p in enumerate(req.prompts):
            check_prompt(p, f"prompts[{i}]", reserved)
    except InputError as e:
        raise bad(422, e.field, e.msg) from None
    tokens = prompt_tokens(tokenizer, req.prompts)
    for i, n in enumerate(tokens):
        if n > cfg.max_prompt_tokens:
            raise bad(422, f"prompts[{i}]", f"expected at most {cfg.max_prompt_tokens} tokens (max_prompt_tokens), "
                                             f"got {n}")
    if sum(tokens) > cfg.max_request_tokens:
        raise bad(422, "prompts", f"expected at most {cfg.max_request_tokens} prompt tokens per request "
                                   f"(max_request_tokens), got {sum(tokens)}; send fewer prompts per request")
    return tokens


def load_checked(src, cfg: ServeConfig, what: str, shown: str | None = None):
    """Decode one image and check that the preprocessing can take it (400 / 422 naming `what`)."""
    try:
        im = load_image(src, max_pixels=cfg.max_pixels, what=what)
    except ImageLoadError as e:  # name the client's path, not the server's absolute one
        raise error(400, str(e) if shown is None else str(e).replace(str(src), shown)) from None
    except (OSError, ValueError) as e:
        raise bad(400, what, f"cannot read this image ({os_reason(e)})") from None
    try:
        check_image(im, what)
    except InputError as e:
        raise bad(422, e.field, e.msg) from None
    return im


def prepare(req: ScoreRequest, cfg: ServeConfig, tokenizer, reserved: list[str]) -> tuple[list, list[int]]:
    """Check the prompts and decode + check the images (runs in a worker thread) → (images, prompt tokens)."""
    tokens = check_prompts(req, cfg, tokenizer, reserved)
    return decode_images(req, cfg), tokens


def decode_images(req: ScoreRequest, cfg: ServeConfig) -> list:
    """Decode all images of a request; raises HTTPException naming the index."""
    out = []
    if req.images is not None:
        for i, s in enumerate(req.images):
            what = f"images[{i}]"
            out.append(load_checked(b64decode(s, what), cfg, what))
            check_total(out, cfg, what)
        return out
    if cfg.allowed_root is None:
        raise bad(403, "paths", "server-side paths are disabled on this server (start it with --allowed-root)")
    for i, rel in enumerate(req.paths):
        what = f"paths[{i}]"
        p = resolve_under(cfg.allowed_root, rel, what)
        out.append(load_checked(p, cfg, what, shown=rel))
        check_total(out, cfg, what)
    return out
