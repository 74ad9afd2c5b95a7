"""`zreward serve`: run the micro-batched HTTP reward server (FastAPI app on uvicorn) for one saved Scorer.

    zreward serve --model DIR [--host 127.0.0.1] [--port 8000] [--max-batch 16] [--max-wait-ms 10]
                  [--token-file F] [--allowed-root DIR] [--allow-reasoning] [--device cuda] [--dtype bf16]

See `zreward.serve.app` for the API and its safety checks, `zreward.serve.batcher` for micro-batching and
`zreward.client.RewardClient` for the Python client. SIGINT/SIGTERM shut down gracefully: stop accepting, finish
in-flight requests (up to --graceful-timeout seconds), then exit (uvicorn re-raises the signal after its graceful
shutdown, so the exit status is that of the signal). `--port 0` picks a free port; the line
"zreward serve: listening on http://HOST:PORT" is printed (and flushed) once the server accepts requests.

`start_server_thread` runs the same server inside the current process (tests, benchmarks, notebooks).
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from zreward.serve.app import ServeConfig, create_app


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so that port 0 resolves to a known free port before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app, cfg: ServeConfig, graceful_timeout: float | None, log_level: str):
    import uvicorn

    from zreward.serve.connection_guard import guarded_h11  # deferred with uvicorn (it imports uvicorn and h11)

    # uvicorn's own limit_concurrency counts idle connections and refuses /health too: the app's RequestLimits
    # middleware replaces it, and the guarded h11 protocol adds the header timeout and the per-client cap.
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=graceful_timeout,
                            access_log=False, timeout_keep_alive=cfg.keep_alive_s, limit_concurrency=None,
                            http=guarded_h11(cfg.header_timeout_s, cfg.max_client_connections))
    return uvicorn.Server(config)


@dataclass
class ServerHandle:
    """A server running in a background thread of this process.

    Attributes:
        url: "http://host:port".  server: the `uvicorn.Server`.  thread: its thread.  app: the FastAPI app.
    """

    url: str
    server: object
    thread: threading.Thread
    app: object

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: stop accepting, finish in-flight requests, run the app's shutdown; wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"server thread did not stop within {timeout} s")


def start_server_thread(scorer, cfg: ServeConfig, host: str = "127.0.0.1", port: int = 0,
                        graceful_timeout: float | None = 30.0, log_level: str = "warning",
                        startup_timeout: float = 30.0) -> ServerHandle:
    """Start the reward server for `scorer` in a daemon thread and wait until it accepts connections."""
    app = create_app(scorer, cfg)
    sock = _bind(host, port)
    server = _uvicorn_server(app, cfg, graceful_timeout, log_level)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="zreward-serve", daemon=True)
    t.start()
    end = time.monotonic() + startup_timeout
    while not server.started:
        if not t.is_alive():
            raise RuntimeError("the server thread exited during startup (see the log above)")
        if time.monotonic() > end:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {startup_timeout} s")
        time.sleep(0.01)
    h, p = sock.getsockname()[:2]
    return ServerHandle(f"http://{h if ':' not in h else f'[{h}]'}:{p}", server, t, app)


def read_token_file(path: str | Path) -> str:
    """The bearer token: the file's content without surrounding whitespace; an empty file is an error."""
    p = Path(path)
    try:
        tok = p.read_text().strip()
    except OSError as e:
        raise ValueError(f"--token-file {p}: cannot read it ({e.strerror})") from None
    if not tok or any(c.isspace() for c in tok):
        raise ValueError(f"--token-file {p}: expected one non-empty token without whitespace")
    return tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zreward serve", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="scorer directory (or hub name)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    ap.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    ap.add_argument("--max-batch", type=int, default=16, help="images per forward batch")
    ap.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for batch company")
    ap.add_argument("--max-queue", type=int, default=1024, help="queued images before answering 429")
    ap.add_argument("--token-file", default=None, help="file holding the bearer token (default: no auth)")
    ap.add_argument("--allowed-root", default=None, help="directory for server-side `paths` (default: disabled)")
    ap.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit in MiB")
    ap.add_argument("--max-pixels", type=int, default=16 * 1024 * 1024, help="per-image pixel limit")
    ap.add_argument("--max-images", type=int, default=256, help="images per request")
    ap.add_argument("--max-request-mpx", type=float, default=64.0, help="decoded megapixels per request")
    ap.add_argument("--max-queue-mpx", type=float, default=256.0, help="decoded megapixels queued before 429")
    ap.add_argument("--max-prompt-chars", type=int, default=4000, help="characters per prompt")
    ap.add_argument("--max-prompt-tokens", type=int, default=512, help="tokens per prompt (the model's tokenizer)")
    ap.add_argument("--max-request-tokens", type=int, default=16384, help="prompt tokens per request")
    ap.add_argument("--max-batch-tokens", type=int, default=8192, help="prompt tokens per forward batch")
    ap.add_argument("--limit-concurrency", type=int, default=512, help="requests in flight before 503 (/health exempt)")
    ap.add_argument("--max-client-connections", type=int, default=64,
                    help="open connections per client address before 503 (/health exempt)")
    ap.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds a connection may take to send a complete request head")
    ap.add_argument("--body-timeout", type=float, default=60.0, help="seconds to receive a request body (408)")
    ap.add_argument("--keep-alive", type=float, default=10.0, help="idle seconds between requests on a connection")
    ap.add_argument("--allow-reasoning", action="store_true", help="accept reasoning=true requests (slow)")
    ap.add_argument("--max-samples", type=int, default=8, help="chains per (image, dim) in reasoning mode")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--graceful-timeout", type=float, default=60.0, help="seconds to finish in-flight requests")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    counts = ("max_batch", "max_queue", "max_images", "max_prompt_chars", "max_prompt_tokens", "max_request_tokens",
              "max_batch_tokens", "limit_concurrency", "max_client_connections")
    for name in counts:
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected ≥ 1, got {getattr(args, name)}")
    for name in ("header_timeout", "body_timeout", "keep_alive"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')}: expected a positive number of seconds, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        ap.error(f"--max-wait-ms: expected ≥ 0, got {args.max_wait_ms}")
    try:
        token = read_token_file(args.token_file) if args.token_file else None
    except ValueError as e:
        ap.error(str(e))
    root = None
    if args.allowed_root:
        root = Path(args.allowed_root).resolve()
        if not root.is_dir():
            ap.error(f"--allowed-root {args.allowed_root}: expected an existing directory")
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"zreward serve: WARNING: listening on {args.host} without --token-file: anyone who can reach it "
              f"can use it", file=sys.stderr)

    from zreward.models.scorer import load_scorer  # deferred: torch + transformers load only once args are valid

    scorer = load_scorer(args.model, device=args.device, dtype=args.dtype, add_level_tokens=False)
    cfg = ServeConfig(model=str(args.model), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                      max_queue=args.max_queue, token=token, allowed_root=root,
                      max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                      max_request_pixels=int(args.max_request_mpx * 1e6),
                      max_queue_pixels=int(args.max_queue_mpx * 1e6),
                      max_images=args.max_images, allow_reasoning=args.allow_reasoning, max_samples=args.max_samples,
                      max_prompt_chars=args.max_prompt_chars, max_prompt_tokens=args.max_prompt_tokens,
                      max_request_tokens=args.max_request_tokens, max_batch_tokens=args.max_batch_tokens,
                      limit_concurrency=args.limit_concurrency, max_client_connections=args.max_client_connections,
                      header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                      keep_alive_s=args.keep_alive)
    app = create_app(scorer, cfg)
    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        print(f"zreward serve: cannot bind {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    server = _uvicorn_server(app, cfg, args.graceful_timeout, args.log_level)
    h, p = sock.getsockname()[:2]

    def announce():  # printed only once uvicorn really accepts requests (harnesses wait for this line)
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            print(f"zreward serve: listening on http://{h}:{p}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])  # uvicorn installs SIGINT/SIGTERM handlers → graceful shutdown
    return 0


if __name__ == "__main__":
    sys.exit(main())
