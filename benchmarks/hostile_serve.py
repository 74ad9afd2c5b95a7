"""Hostile inputs against a loopback `zreward serve` (127.0.0.1 only, bounded loops); prints the reliability figures.

Usage: python benchmarks/hostile_serve.py [--model DIR] [--trials 3] [--idle 530] [--header-timeout 2]

Starts the reward server in this process (a random tiny scorer unless --model) with a `--allowed-root` holding
good images, a symlink escape, a symlink loop and odd files, then runs three parts:
1. **singles**: ≥ 150 hostile requests, one at a time (malformed / deeply nested / invalid UTF-8 JSON, wrong
   types, lone surrogates and reserved tokens in every text field, over-long prompts in characters and in tokens,
   bad base64, corrupt / bomb / extreme-aspect images, path escapes, NUL, ENAMETOOLONG, symlink loops, bad
   headers and methods). Each must get a 4xx; a 200 is a silent wrong result, ≥ 500 a server error.
2. **poisoned batches**: per poison kind and trial, 6 good requests and 1 poisoned one sent together (they share
   a micro-batch); every good answer must be a 200 equal to local `Scorer.score` (|Δ| ≤ 1e-5), the poisoned one
   a 4xx. Then two attacker threads loop over the poisons while a `RewardClient` (no retries) makes 4·trials + 4
   calls: none may fail or differ from local scoring.
3. **connections**: `--idle` idle connections plus a slow-loris from a second loopback address (127.0.0.2) while a
   client on 127.0.0.1 calls /health and /score; then the idle connections must be closed by the header timeout.
Prints: responses ≥ 500, good requests failed by another client's bad request, silent wrong results, and the
connection figures. Exit status 1 when any of the three counts is not 0.

`run_all(url, scorer, ...)` returns the same figures as a dict (used by tests/adversarial).

Measured 2026-12-01 on the shared 2-core CPU box (random tiny qwen2_vl scorer, `--trials 12 --idle 530
--header-timeout 2`, 18 s): 154 hostile single requests → 154 4xx, 0 ≥ 500, 0 answered 200; 288 good requests sent
together with a poisoned one (4 poison kinds × 12 trials × 6) → 0 failed, 0 differing from local scoring, every
poisoned one 422; 52 `RewardClient` calls (no retries) while 2 attacker threads sent 1,408 poisoned requests → 0
failed, 0 wrong; 530 idle connections + a slow-loris from 127.0.0.2 → /health and /score from 127.0.0.1 both 200,
/score from 127.0.0.2 503 (over its 64-connection cap), its /health 200; 530/530 idle connections and the slow-loris
closed by the 2 s header timeout. Before issue 16: 72/72 good requests beside a poisoned one got 500, 11/125 single
hostile requests got 500, 530 idle connections made /health answer 503.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

GOOD_PROMPT = "a red circle left of a blue square"


def png(seed: int, w: int = 32, h: int = 32) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(prompts, images=None, **kw) -> bytes:
    d = {"prompts": prompts, **({"images": images} if images is not None else {}), **kw}
    return json.dumps(d).encode()


def bomb_png(w: int = 50_000, h: int = 50_000) -> bytes:
    """A PNG whose header claims w×h pixels (IHDR only, a few bytes of data)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@dataclass
class Case:
    """One hostile request: raw body bytes (or None), method, path, extra headers."""

    name: str
    data: bytes | None
    method: str = "POST"
    path: str = "/score"
    headers: dict = field(default_factory=dict)


def make_root(root: Path) -> Path:
    """The server's --allowed-root: good images plus escapes, loops and odd files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.png").write_bytes(png(1))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "good2.png").write_bytes(png(2))
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "wide.png").write_bytes(png(3, 300, 1))
    for name, target in (("escape", "/etc"), ("loop_a", "loop_b"), ("loop_b", "loop_a"), ("self", "self")):
        p = root / name
        if not p.is_symlink():
            p.symlink_to(target)
    return root


def hostile_cases(reserved: list[str]) -> list[Case]:
    """≥ 150 requests that must each be answered with a 4xx."""
    good = b64(png(0))
    img = [good]
    c: list[Case] = []
    add = c.append
    # --- JSON itself
    for i, raw in enumerate([b"", b"{", b"[", b"nul", b'{"prompts": [}', b"\xff\xfe\x00", b'{"prompts": ["\xff"], '
                             b'"images": []}', b"[1, 2]", b'"str"', b"null", b"1e999", b'{"prompts": NaN}',
                             b'{"prompts": ["a"], "images": ["' + good.encode() + b'"], "prompts": 1}',
                             b"\xef\xbb\xbf{}", b"{" * 10 + b"}" * 10]):
        add(Case(f"json-{i}", raw))
    for depth in (50, 1000, 5000, 100_000):
        for where in ("top", "prompts", "images", "dims"):
            nest = b"[" * depth + b"]" * depth
            raw = nest if where == "top" else b'{"prompts": ["a"], "images": ["' + good.encode() + b'"], "' + \
                where.encode() + b'": ' + nest + b"}"
            if where == "prompts":
                raw = b'{"prompts": ' + nest + b', "images": ["' + good.encode() + b'"]}'
            add(Case(f"nested-{where}-{depth}", raw))
    # --- schema
    for i, kw in enumerate([{"prompts": None}, {"prompts": 1}, {"prompts": "a"}, {"prompts": [1]}, {"prompts": [None]},
                            {"prompts": [[]]}, {"prompts": {"a": 1}}, {"images": 1}, {"images": [1]},
                            {"images": "x"}, {"dims": [1]}, {"dims": "alignment"}, {"reasoning": "yes"},
                            {"samples": -1}, {"samples": 0}, {"samples": 10 ** 9}, {"samples": 1.5}, {"extra": 1},
                            {"reasoning": True}, {"samples": 2}, {"dims": []}, {"dims": ["nope"]},
                            {"dims": ["alignment", "alignment"]}, {"dims": ["\ud800"]}, {"paths": ["good.png"]}]):
        d = {"prompts": ["a"], "images": img, **kw}
        add(Case(f"schema-{i}", json.dumps(d).encode()))
    add(Case("no-images", body(["a"])))
    add(Case("count-mismatch", body(["a", "b"], img)))
    add(Case("empty-prompts", body([], [])))
    add(Case("too-many-images", body(["a"] * 300, img * 300)))
    # --- prompt text
    for i, p in enumerate(["", "   ", "\n\t", "\ud800", "\udfff", "a\ud800b", "\udc80\udcff", "ok \ud83d",
                           "x" * 4001, "猫" * 4001, "猫" * 1500, "🙂" * 1000, "a " * 1999]):
        add(Case(f"prompt-{i}", json.dumps({"prompts": [p], "images": img}).encode()))
    for t in reserved:
        for j, p in enumerate([t, f"a cat {t}", f"{t}{t}", f"x{t}y" * 3]):
            add(Case(f"reserved-{t}-{j}", json.dumps({"prompts": [p], "images": img}).encode()))
    add(Case("request-tokens", json.dumps({"prompts": ["猫" * 120] * 200, "images": img * 200}).encode()))
    add(Case("surrogate-eighth", json.dumps({"prompts": ["ok"] * 7 + ["a\ud800"], "images": img * 8}).encode()))
    add(Case("reserved-fourth", json.dumps({"prompts": ["ok"] * 3 + [f"a {reserved[0]}"], "images": img * 4}).encode()))
    add(Case("dims-nul", json.dumps({"prompts": ["a"], "images": img, "dims": ["alignment\x00"]}).encode()))
    add(Case("images-null", json.dumps({"prompts": ["a"], "images": [None]}).encode()))
    add(Case("chunked-garbage", b"zz\r\nabc\r\n", headers={"Transfer-Encoding": "chunked"}))
    # --- images
    for i, s in enumerate(["!!!", "data:image/png,xyz", "data:;base64,", "", "AAAA", b64(b"not an image"),
                           b64(png(0)[:40]), b64(bomb_png()), b64(png(4, 300, 1)), b64(png(5, 1, 300)),
                           b64(png(6, 201, 1)), "data:image/png;base64," + b64(png(7, 2000, 3)), "\ud800",
                           b64(b"GIF89a" + b"\x00" * 20), b64(b"\x89PNG\r\n\x1a\n")]):
        add(Case(f"image-{i}", json.dumps({"prompts": ["a"], "images": [s]}).encode()))
    add(Case("image-second-bad", json.dumps({"prompts": ["a", "b"], "images": [good, b64(png(8, 250, 1))]}).encode()))
    # --- server-side paths
    for i, p in enumerate(["../etc/passwd", "/etc/passwd", "a\x00b", "\ud800.png", "x" * 5000, "a/" * 3000 + "b",
                           "loop_a", "loop_a/x.png", "self", "escape/passwd", "sub", "missing.png", "empty.png",
                           "text.png", "wide.png", "", "sub/../../x", "/" * 5000, "\udc80", "good.png/x",
                           "escape", "loop_b/x.png"]):
        add(Case(f"path-{i}", json.dumps({"prompts": ["a"], "paths": [p]}).encode()))
    # --- HTTP level
    add(Case("get-score", None, method="GET"))
    add(Case("put-score", b"{}", method="PUT"))
    add(Case("no-route", b"{}", path="/nope"))
    # headers only: the server answers from the header; a body sent after it would race the server's close (RST)
    add(Case("cl-bogus", b"", headers={"Content-Length": "abc"}))
    add(Case("cl-huge", b"", headers={"Content-Length": str(10 ** 12)}))
    return c


def request(url: str, case: Case, timeout: float = 60.0, source: str | None = None) -> tuple[int, str]:
    """Send one case; returns (status, body text) — status 0 when the connection failed."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        headers = {"Content-Type": "application/json", **case.headers}
        if "Content-Length" in case.headers:  # send the raw header as given
            conn.putrequest(case.method, case.path, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(case.data or b"")
        else:
            conn.request(case.method, case.path, body=case.data, headers=headers)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return 0, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def run_singles(url: str, cases: list[Case]) -> dict:
    out = {"n": len(cases), "ge500": [], "ok_200": [], "other": [], "no_response": []}
    for case in cases:
        st, text = request(url, case)
        if st == 0:  # no HTTP answer at all (counted with the server errors)
            out["no_response"].append((case.name, st, text[:200]))
            out["ge500"].append((case.name, st, text[:200]))
        elif st >= 500:
            out["ge500"].append((case.name, st, text[:200]))
        elif st < 400:
            out["ok_200"].append((case.name, st, text[:200]))
        elif st not in range(400, 500):
            out["other"].append((case.name, st))
    return out


def poisons(family) -> dict[str, bytes]:
    """The poisons that used to fail a whole micro-batch (issue 16), one request each."""
    good = b64(png(0))
    return {"aspect_300x1": body([GOOD_PROMPT], [b64(png(9, 300, 1))]),
            "placeholder": body([f"a cat {family.placeholder} here"], [good]),
            "image_token": body([f"a cat {family.image_token}"], [good]),
            "lone_surrogate": json.dumps({"prompts": ["a cat \ud800"], "images": [good]}).encode()}


def run_poisoned(url: str, scorer, poison_bodies: dict[str, bytes], trials: int, n_good: int = 6) -> dict:
    """6 good + 1 poisoned request at once, per poison and trial → victims, silent wrong results, poison statuses."""
    from zreward.data.images import load_image

    goods = [png(100 + k, 24 + 4 * k, 32) for k in range(n_good)]
    ref = scorer.score([GOOD_PROMPT] * n_good, [load_image(g) for g in goods])
    out = {"good_sent": 0, "victims": 0, "wrong": 0, "ge500": 0, "poison_status": {}}
    for name, pb in poison_bodies.items():
        for _ in range(trials):
            results: dict[int, tuple[int, str]] = {}
            gate = threading.Barrier(n_good + 1)

            def send(k):
                data = pb if k == n_good else body([GOOD_PROMPT], [b64(goods[k])])
                gate.wait()
                results[k] = request(url, Case(name, data))

            ts = [threading.Thread(target=send, args=(k,)) for k in range(n_good + 1)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            for k in range(n_good):
                st, text = results[k]
                out["good_sent"] += 1
                out["ge500"] += st >= 500
                if st != 200:
                    out["victims"] += 1
                    continue
                r = json.loads(text)["results"][0]
                if (np.abs(np.asarray(r["probs"]) - ref.probs[k].numpy()).max() > 1e-5
                        or abs(r["overall"] - float(ref.overall[k])) > 1e-5):
                    out["wrong"] += 1
            st = results[n_good][0]
            out["ge500"] += st >= 500 or st == 0
            out["poison_status"].setdefault(name, []).append(st)
    return out


def run_attacked_client(url: str, scorer, poison_bodies: dict[str, bytes], calls: int = 40) -> dict:
    """Two attacker threads loop over the poisons while a `RewardClient` makes `calls` calls → its failures."""
    from zreward.client import RewardClient, RewardServerError
    from zreward.data.images import load_image

    goods = [png(300 + k) for k in range(calls)]
    stop, sent = threading.Event(), [0, 0]

    def attack(k):
        bodies = list(poison_bodies.values())
        for i in range(10_000):  # bounded; stops when the victim is done
            if stop.is_set():
                return
            st = request(url, Case("poison", bodies[(i + k) % len(bodies)]))[0]
            sent[0] += 1
            sent[1] += st >= 500 or st == 0

    ts = [threading.Thread(target=attack, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    client, failed, wrong = RewardClient(url, retries=0), 0, 0
    try:
        for g in goods:
            try:
                got = client.score([GOOD_PROMPT], [g])
            except RewardServerError:
                failed += 1
                continue
            ref = scorer.score([GOOD_PROMPT], [load_image(g)])
            wrong += bool(np.abs(got["probs"][0] - ref.probs[0].numpy()).max() > 1e-5)
    finally:
        stop.set()
        for t in ts:
            t.join()
    return {"calls": calls, "failed": failed, "wrong": wrong, "poisons_sent": sent[0], "poison_ge500": sent[1]}


def run_connections(url: str, n_idle: int, header_timeout: float, attacker: str = "127.0.0.2") -> dict:
    """Idle connections + a slow-loris from `attacker` while 127.0.0.1 checks /health and /score."""
    u = urlsplit(url)
    socks = []
    for _ in range(n_idle):
        s = socket.socket()
        s.bind((attacker, 0))
        s.connect((u.hostname, u.port))
        socks.append(s)
    loris = socket.create_connection((u.hostname, u.port), source_address=(attacker, 0))
    loris.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.3)
    health = request(url, Case("health", None, method="GET", path="/health"))[0]
    score = request(url, Case("score", body([GOOD_PROMPT], [b64(png(0))])))[0]
    attacker_score = request(url, Case("score", body([GOOD_PROMPT], [b64(png(0))])), source=attacker)[0]
    attacker_health = request(url, Case("health", None, method="GET", path="/health"), source=attacker)[0]
    end = time.monotonic() + header_timeout + 5.0
    loris_closed_after = None
    t0 = time.monotonic()
    while time.monotonic() < end and loris_closed_after is None:  # bounded: header timeout + 5 s
        try:
            loris.sendall(b"X-a: b\r\n")
        except OSError:
            loris_closed_after = time.monotonic() - t0
            break
        loris.settimeout(0.5)
        try:
            if loris.recv(1) == b"":
                loris_closed_after = time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            loris_closed_after = time.monotonic() - t0
    closed = 0
    for s in socks:
        s.settimeout(max(0.05, end - time.monotonic()))
        try:
            closed += s.recv(1) == b""
        except (socket.timeout, OSError):
            pass
        s.close()
    loris.close()
    return {"idle": n_idle, "health": health, "score": score, "attacker_score": attacker_score,
            "attacker_health": attacker_health, "idle_closed": closed,
            "slowloris_closed_after_s": None if loris_closed_after is None else round(loris_closed_after, 2)}


def run_all(url: str, scorer, trials: int = 3, n_idle: int = 530, header_timeout: float = 2.0) -> dict:
    from zreward.models.input_checks import reserved_tokens

    reserved = reserved_tokens(scorer.tokenizer, scorer.family)
    singles = run_singles(url, hostile_cases(reserved))
    poisoned = run_poisoned(url, scorer, poisons(scorer.family), trials)
    attacked = run_attacked_client(url, scorer, poisons(scorer.family), calls=4 * trials + 4)
    conns = run_connections(url, n_idle, header_timeout)
    return {"singles": singles, "poisoned": poisoned, "attacked": attacked, "connections": conns,
            "responses_ge500": len(singles["ge500"]) + poisoned["ge500"] + attacked["poison_ge500"],
            "good_failed_by_other": poisoned["victims"] + attacked["failed"] + (conns["score"] != 200)
            + (conns["health"] != 200),
            "silent_wrong": len(singles["ok_200"]) + poisoned["wrong"] + attacked["wrong"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="scorer directory (default: a random tiny qwen2_vl scorer)")
    ap.add_argument("--trials", type=int, default=3, help="trials per poison kind (6 good + 1 poisoned each)")
    ap.add_argument("--idle", type=int, default=530, help="idle connections opened by the attacker")
    ap.add_argument("--header-timeout", type=float, default=2.0, help="the server's header timeout (s)")
    args = ap.parse_args(argv)

    from zreward.serve.app import ServeConfig
    from zreward.models.scorer import load_scorer
    from zreward.serve.serve_cli import start_server_thread

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from zreward.models.tiny import init_tiny

            model = init_tiny("qwen2_vl", Path(tmp) / "tiny", preset="tiny", seed=0)
        scorer = load_scorer(model, add_level_tokens=False)
        root = make_root(Path(tmp) / "root")
        cfg = ServeConfig(model=str(model), max_wait_ms=50, allowed_root=root, header_timeout_s=args.header_timeout,
                          max_client_connections=64)
        h = start_server_thread(scorer, cfg)
        try:
            t0 = time.monotonic()
            fig = run_all(h.url, scorer, args.trials, args.idle, args.header_timeout)
            wall = time.monotonic() - t0
        finally:
            h.stop()
    s, p, a, c = fig["singles"], fig["poisoned"], fig["attacked"], fig["connections"]
    print(f"singles: {s['n']} hostile requests: {len(s['ge500'])} ≥ 500, {len(s['ok_200'])} answered 200 "
          f"(must be refused), {s['n'] - len(s['ge500']) - len(s['ok_200'])} 4xx")
    for name, st, text in s["ge500"] + s["ok_200"]:
        print(f"  {name}: {st} {text}")
    print(f"poisoned batches: {p['good_sent']} good requests beside a poisoned one: {p['victims']} failed, "
          f"{p['wrong']} wrong; poisoned statuses "
          f"{ {k: dict(Counter(v)) for k, v in p['poison_status'].items()} }")
    print(f"attacked client: {a['calls']} RewardClient calls (no retries) while 2 threads sent {a['poisons_sent']} "
          f"poisoned requests: {a['failed']} failed, {a['wrong']} wrong; poisons answered ≥ 500: {a['poison_ge500']}")
    print(f"connections: {c['idle']} idle + a slow-loris from 127.0.0.2: /health {c['health']}, /score "
          f"{c['score']} (127.0.0.1); over-cap /score {c['attacker_score']}, /health {c['attacker_health']} "
          f"(127.0.0.2); {c['idle_closed']}/{c['idle']} idle closed by the header timeout; slow-loris closed after "
          f"{c['slowloris_closed_after_s']} s")
    print(f"responses >= 500: {fig['responses_ge500']}; good requests failed by another client's bad request: "
          f"{fig['good_failed_by_other']}; silent wrong results: {fig['silent_wrong']}  ({wall:.1f} s)")
    return int(fig["responses_ge500"] or fig["good_failed_by_other"] or fig["silent_wrong"])


if __name__ == "__main__":
    sys.exit(main())
