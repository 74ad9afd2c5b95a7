"""The ASGI app of `zreward serve`: FastAPI routes around one `Scorer` and a `MicroBatcher`.

Routes:
- `POST /score` — body `ScoreRequest` (JSON): `prompts` (B strings) and either `images` (B base64 PNG/JPEG/WebP
  strings, a `data:image/...;base64,` prefix is allowed) or `paths` (B server-side paths, only under
  `--allowed-root`); optional `dims` (subset of the scorer's), `reasoning` (off unless the server allows it) and
  `samples`. Returns `ScoreResponse`: top-level `dims`, `levels`, and per image `probs` (D×L), `mean` (D), `std` (D),
  `overall` — the very numbers `Scorer.score` returns (float32 values written exactly).
- `GET /health` — liveness (never needs the token).  `GET /info` — model, family, levels, dims, reward weights,
  version, limits and batcher statistics.  `GET /openapi.json`, `/docs` — FastAPI's schema and UI.

Safety (each violation is a 4xx whose `detail` names the field and index; the server keeps serving):
- bearer token compared with `hmac.compare_digest` when configured (401 otherwise);
- request body limit: 413 from `Content-Length` before reading, or as soon as a streamed body exceeds it;
- JSON syntax, invalid UTF-8 or nesting too deep to parse → 400; schema (types, missing fields, extra fields) →
  422; empty `prompts`, length mismatch, too many images, unknown dims, reasoning not allowed → 422;
- everything that could fail inside the batched model call is checked before the job joins a batch
  (`zreward.models.input_checks`): a prompt that is not valid Unicode (a lone surrogate), empty, over
  `max_prompt_chars` characters or `max_prompt_tokens` tokens, or holding a reserved (special) token of the model's
  tokenizer (`<|image_pad|>`, chat markers, ...) → 422 naming `prompts[i]`; more than `max_request_tokens` prompt
  tokens in one request → 422; an image the preprocessing cannot take (aspect ratio over 200:1) → 422 naming
  `images[i]` / `paths[i]`;
- bad base64, undecodable image, too many pixels in one image (checked from the header by `load_image`, before
  decoding), an unusable path (too long, a symlink loop, not valid text) → 400; more than `max_request_pixels`
  decoded pixels in one request (a tiny PNG can decode to a huge image) → 413; a path outside the allowed root
  (after resolving symlinks and `..`) or paths disabled → 403; a body not received within `body_timeout_s` → 408;
  queue full (images or decoded pixels) → 429 with Retry-After; shutting down, more than `limit_concurrency`
  requests in flight, or more than `max_client_connections` connections from one address → 503 (`/health` is
  always answered; see `zreward.serve.connection_guard`);
- a batch whose model call fails anyway is re-run one request at a time (`MicroBatcher`), so only the culprit gets
  an error, with its own message: 422 when the scorer refused its input (ValueError), 500 for any other failure.
The request's inputs are checked and decoded by `zreward.serve.request_inputs`. Decoding runs in a worker thread so
that the event loop keeps serving while images are decoded. A client that disconnects while its job waits has the
job cancelled (the batcher drops it; logged as 499 in the counters).
"""
from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zreward import __version__
from zreward.models.input_checks import reserved_tokens
from zreward.serve.batcher import BatcherClosed, BatchKey, MicroBatcher, QueueFull
from zreward.serve.connection_guard import RequestLimits
from zreward.serve.request_inputs import bad, error, prepare

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


@dataclass
class ServeConfig:
    """Server settings (`zreward serve` flags).

    Attributes:
        model: scorer directory (reported by /info).  max_batch / max_wait_ms / max_queue: see `MicroBatcher`.
        token: bearer token (None = no authentication).  allowed_root: directory that `paths` must resolve into
            (None = `paths` disabled).  max_body_bytes: request body limit.  max_pixels: per-image pixel limit.
        max_request_pixels: decoded pixels per request.  max_queue_pixels: decoded pixels waiting in the batcher.
        max_images: images per request.  max_prompt_chars: characters per prompt.  max_prompt_tokens: tokens per
            prompt (the scorer's tokenizer).  max_request_tokens: prompt tokens per request.  max_batch_tokens:
            prompt tokens per forward batch (see `MicroBatcher`).  allow_reasoning: accept `reasoning: true`.
            max_samples: chains per (image, dim) in reasoning mode.
        body_timeout_s: seconds to receive a request body (408 after).  header_timeout_s: seconds a connection
            may take to send a complete request head (closed after).  keep_alive_s: idle seconds between
            requests on a kept-alive connection.  limit_concurrency: requests in flight (503 beyond; /health
            exempt).  max_client_connections: open connections per client address (503 beyond; /health exempt).
    """

    model: str = ""
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 1024
    token: str | None = None
    allowed_root: Path | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 16 * 1024 * 1024
    max_request_pixels: int = 64_000_000
    max_queue_pixels: int = 256_000_000
    max_images: int = 256
    max_prompt_chars: int = 4000
    max_prompt_tokens: int = 512
    max_request_tokens: int = 16384
    max_batch_tokens: int = 8192
    allow_reasoning: bool = False
    max_samples: int = 8
    body_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 10.0
    limit_concurrency: int = 512
    max_client_connections: int = 64


class ScoreRequest(BaseModel):
    """`POST /score` body."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(description="B text prompts, one per image")
    images: list[str] | None = Field(None, description="B base64-encoded PNG/JPEG/WebP images")
    paths: list[str] | None = Field(None, description="B image paths under the server's --allowed-root")
    dims: list[str] | None = Field(None, description="dimensions to score (default: all of the scorer's)")
    reasoning: bool = Field(False, description="generate reasoning chains first (server must allow it)")
    samples: int = Field(1, ge=1, description="chains per (image, dim) in reasoning mode")


class ImageScore(BaseModel):
    probs: list[list[float]] = Field(description="(D, L) level distribution per dimension")
    mean: list[float] = Field(description="(D,) expected score per dimension")
    std: list[float] = Field(description="(D,) standard deviation per dimension")
    overall: float = Field(description="reward-weighted mean over the dimensions")


class ScoreResponse(BaseModel):
    dims: list[str]
    levels: list[float]
    results: list[ImageScore]


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, stopping with 413 as soon as it is known to exceed `limit` bytes."""
    cl = request.headers.get("content-length")
    if cl is not None:
        if not cl.isdigit():
            raise bad(400, "Content-Length", f"expected a byte count, got {cl!r}")
        if int(cl) > limit:
            raise bad(413, "body", f"{cl} bytes exceeds the limit of {limit} bytes")
    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise bad(413, "body", f"more than the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # gone mid-body: nothing to answer, and not a server error
        raise HTTPException(499, "client disconnected while sending the body") from None
    return b"".join(chunks)


def _validate(req: ScoreRequest, scorer, cfg: ServeConfig) -> BatchKey:
    """Semantic checks beyond the schema; returns the batch key."""
    b = len(req.prompts)
    if b == 0:
        raise bad(422, "prompts", "expected at least one prompt, got an empty list")
    if b > cfg.max_images:
        raise bad(422, "prompts", f"expected at most {cfg.max_images} images per request, got {b}")
    for i, p in enumerate(req.prompts):
        if len(p) > cfg.max_prompt_chars:
            raise bad(422, f"prompts[{i}]", f"expected at most {cfg.max_prompt_chars} characters, got {len(p)}")
    if (req.images is None) == (req.paths is None):
        raise bad(422, "images", "expected exactly one of `images` (base64) or `paths` (server-side)")
    field = "images" if req.images is not None else "paths"
    n = len(req.images if req.images is not None else req.paths)
    if n != b:
        raise bad(422, field, f"expected {b} entries (one per prompt), got {n}")
    known = list(scorer.dims)
    dims = known if req.dims is None else list(req.dims)
    if not dims:
        raise bad(422, "dims", f"expected a non-empty subset of {known} (or omit it)")
    for i, d in enumerate(dims):
        if d not in scorer.config.rubrics:
            raise bad(422, f"dims[{i}]", f"unknown dimension {d!r}; this scorer knows {known}")
    if len(set(dims)) != len(dims):
        raise bad(422, "dims", f"expected distinct dimensions, got {dims}")
    if req.reasoning and not cfg.allow_reasoning:
        raise bad(422, "reasoning", "reasoning mode is disabled on this server (start it with --allow-reasoning)")
    if req.samples > cfg.max_samples:
        raise bad(422, "samples", f"expected at most {cfg.max_samples}, got {req.samples}")
    if not req.reasoning and req.samples != 1:
        raise bad(422, "samples", "expected 1 without reasoning (direct mode reads one distribution)")
    return BatchKey(tuple(dims), bool(req.reasoning), int(req.samples))


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class AuthAndCount:
    """Pure ASGI middleware: bearer-token check (constant-time) on every path but OPEN_PATHS; /score counters."""

    def __init__(self, app, token: bytes | None, counters: dict):
        self.app, self.token, self.counters = app, token, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            got = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, cred = got.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(cred.strip(), self.token):
                self.counters["client_errors"] += 1
                resp = JSONResponse({"detail": "Authorization: expected a valid 'Bearer <token>' header"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await resp(scope, receive, send)
        if scope["path"] != "/score":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            c = self.counters
            c["requests"] += 1
            c["ok" if status[0] < 400 else "client_errors" if status[0] < 500 else "server_errors"] += 1


def create_app(scorer, cfg: ServeConfig) -> FastAPI:
    """Build the FastAPI app; the batcher starts and stops with the app's lifespan (graceful shutdown)."""
    batcher = MicroBatcher(scorer, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, cfg.max_queue_pixels,
                           cfg.max_batch_tokens)
    reserved = reserved_tokens(scorer.tokenizer, scorer.family)
    token = cfg.token.encode() if cfg.token else None
    counters = {"requests": 0, "ok": 0, "client_errors": 0, "server_errors": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        # uvicorn has stopped accepting connections and waited for in-flight requests; finish what is queued.
        await batcher.close()

    app = FastAPI(title="zreward reward server", version=__version__, lifespan=lifespan,
                  description="Scores (prompt, image) pairs with a Z-Reward scorer: a distribution over rubric "
                              "levels per dimension, its mean and std, and the weighted overall score.")
    app.state.batcher, app.state.config, app.state.counters = batcher, cfg, counters

    app.add_middleware(AuthAndCount, token=token, counters=counters)
    app.add_middleware(RequestLimits, limit_concurrency=cfg.limit_concurrency,
                       max_client_connections=cfg.max_client_connections)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        c = scorer.config
        return {"model": cfg.model, "family": c.family, "mode": c.mode, "levels": list(c.levels), "dims": list(c.dims),
                "reward_weights": list(c.reward_weights), "version": __version__, "scorer_format": c.version,
                "limits": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms, "max_queue": cfg.max_queue,
                           "max_body_bytes": cfg.max_body_bytes, "max_pixels": cfg.max_pixels,
                           "max_request_pixels": cfg.max_request_pixels, "max_queue_pixels": cfg.max_queue_pixels,
                           "max_images": cfg.max_images, "max_prompt_chars": cfg.max_prompt_chars,
                           "max_prompt_tokens": cfg.max_prompt_tokens, "max_request_tokens": cfg.max_request_tokens,
                           "max_batch_tokens": cfg.max_batch_tokens, "body_timeout_s": cfg.body_timeout_s,
                           "header_timeout_s": cfg.header_timeout_s, "keep_alive_s": cfg.keep_alive_s,
                           "limit_concurrency": cfg.limit_concurrency,
                           "max_client_connections": cfg.max_client_connections,
                           "allow_reasoning": cfg.allow_reasoning, "max_samples": cfg.max_samples,
                           "paths_enabled": cfg.allowed_root is not None, "auth": token is not None},
                "stats": {**counters, **batcher.stats.as_dict(), "queued_images": batcher.queued_images}}

    schema = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": ScoreRequest.model_json_schema()}}}}

    @app.post("/score", response_model=None, openapi_extra=schema,
              responses={200: {"model": ScoreResponse}, 400: {}, 401: {}, 403: {}, 413: {}, 422: {}, 429: {}})
    async def score(request: Request):
        # The body is read and parsed by hand: the size limit must act before the whole body is in memory, and
        # every error must name its field.
        try:
            body = await asyncio.wait_for(_read_body(request, cfg.max_body_bytes), cfg.body_timeout_s)
        except asyncio.TimeoutError:
            raise bad(408, "body", f"not received within {cfg.body_timeout_s} s (body_timeout_s)") from None
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise bad(400, "body", f"expected a JSON object, malformed JSON ({e})") from None
        except RecursionError:
            raise bad(400, "body", "expected a JSON object, nested too deeply to parse") from None
        if not isinstance(raw, dict):
            raise bad(422, "body", f"expected a JSON object, got {type(raw).__name__}")
        try:
            req = ScoreRequest.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            raise bad(422, loc or "body", err["msg"] + (f" ({len(e.errors())} errors)" if len(e.errors()) > 1 else ""))
        key = _validate(req, scorer, cfg)
        images, tokens = await asyncio.to_thread(prepare, req, cfg, scorer.tokenizer, reserved)
        try:
            fut = batcher.submit(req.prompts, images, key, sum(im.width * im.height for im in images), sum(tokens))
        except QueueFull as e:
            raise HTTPException(429, f"queue: {e}", headers={"Retry-After": "1"}) from None
        except BatcherClosed as e:
            raise HTTPException(503, f"server: {e}") from None
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({fut, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this handler was cancelled: its job must not be scored for no one
            fut.cancel()
            raise
        finally:
            watcher.cancel()
        if not fut.done():  # the client went away: cancel its job (the batcher drops it), answer no one
            fut.cancel()
            return JSONResponse({"detail": "client disconnected"}, status_code=499)
        try:
            res = fut.result()
        except ValueError as e:  # failed alone (the batcher re-ran it on its own): the scorer refused this input
            raise error(422, f"scorer: refused this request's input: {e}") from None
        except Exception as e:  # failed alone for another reason: a server error, the server keeps going
            raise error(500, f"scorer: {type(e).__name__}: {e}") from None
        results = [{"probs": p, "mean": m, "std": s, "overall": o} for p, m, s, o in
                   zip(res.probs.tolist(), res.mean.tolist(), res.std.tolist(), res.overall.tolist())]
        return JSONResponse({"dims": list(key.dims), "levels": [float(v) for v in scorer.levels.tolist()],
                             "results": results})

    return app
