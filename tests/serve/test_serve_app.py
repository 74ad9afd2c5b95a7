"""The real reward server on loopback: exact scores, every bad-input class, auth, paths, batching, shutdown."""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
from serve_helpers import b64, get, png_bytes, post

from zreward.data.images import load_image


def _local(scorer, prompts, datas, dims=None):
    return scorer.score(prompts, [load_image(d) for d in datas], dims=dims)


def _assert_matches(resp, local, idx=None):
    idx = range(len(resp["results"])) if idx is None else idx
    for r, i in zip(resp["results"], idx):
        np.testing.assert_allclose(r["probs"], local.probs[i].numpy(), atol=1e-5)
        np.testing.assert_allclose(r["mean"], local.mean[i].numpy(), atol=1e-5)
        np.testing.assert_allclose(r["std"], local.std[i].numpy(), atol=1e-5)
        assert abs(r["overall"] - float(local.overall[i])) < 1e-5


def test_score_matches_local_scorer(start, scorer):
    h = start(max_wait_ms=0)
    datas = [png_bytes(0, 32, 32), png_bytes(1, 48, 32), png_bytes(2, 40, 40)]
    prompts = ["a red circle", "two blue squares left of a star", "a green triangle"]
    st, body, _ = post(h.url, "/score", {"prompts": prompts, "images": [b64(d) for d in datas]})
    assert st == 200, body
    assert body["dims"] == scorer.dims and body["levels"] == [1.0 + 0.5 * k for k in range(9)]
    assert np.asarray(body["results"][0]["probs"]).shape == (4, 9)
    _assert_matches(body, _local(scorer, prompts, datas))
    # a dims subset, in the caller's order, and a data-URL image
    st, body, _ = post(h.url, "/score", {"prompts": prompts[:1], "dims": ["realism", "alignment"],
                                         "images": ["data:image/png;base64," + b64(datas[0])]})
    assert st == 200 and body["dims"] == ["realism", "alignment"]
    _assert_matches(body, _local(scorer, prompts[:1], datas[:1], dims=["realism", "alignment"]))
    st, info = get(h.url, "/info")
    assert st == 200 and info["dims"] == scorer.dims and info["version"] and info["family"] == "qwen2_vl"
    st, schema = get(h.url, "/openapi.json")
    assert "prompts" in schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]


def test_every_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(start, scorer):
    h = start(max_wait_ms=0, max_pixels=64 * 64, max_body_bytes=200_000, max_request_pixels=3 * 32 * 32)
    good = png_bytes(3)
    ok_body = {"prompts": ["a red circle"], "images": [b64(good)]}
    bomb = png_bytes(4, 100, 100)  # 10 000 px > 4 096
    cases = [
        (b"{not json", 400, "body: expected a JSON object, malformed JSON"),
        (b"[1, 2]", 422, "body: expected a JSON object, got list"),
        ({"images": [b64(good)]}, 422, "prompts: Field required"),
        ({"prompts": ["a", 3], "images": [b64(good)] * 2}, 422, "prompts[1]"),
        ({"prompts": [], "images": []}, 422, "prompts: expected at least one prompt"),
        ({"prompts": ["a", "  "], "images": [b64(good)] * 2}, 422, "prompts[1]: expected a non-empty prompt"),
        ({"prompts": ["a", "b"], "images": [b64(good)]}, 422, "images: expected 2 entries (one per prompt), got 1"),
        ({"prompts": ["a"]}, 422, "exactly one of `images`"),
        ({"prompts": ["a"], "images": [b64(good)], "paths": ["x.png"]}, 422, "exactly one of `images`"),
        ({"prompts": ["a"], "images": [b64(good)], "colour": 1}, 422, "colour"),
        ({"prompts": ["a", "b"], "images": [b64(good), "%%%not-base64"]}, 400, "images[1]: expected base64"),
        ({"prompts": ["a"], "images": [b64(b"GIF89a not an image at all")]}, 400, "images[0]"),
        ({"prompts": ["a"], "images": [b64(good[: len(good) // 2])]}, 400, "images[0]"),
        ({"prompts": ["a"], "images": [b64(bomb)]}, 400, "images[0]: image <"),
        ({"prompts": ["a"], "images": [b64(good)], "dims": ["alignment", "beauty"]}, 422, "dims[1]: unknown"),
        ({"prompts": ["a"], "images": [b64(good)], "reasoning": True}, 422, "reasoning mode is disabled"),
        ({"prompts": ["a"], "images": [b64(good)], "samples": 3}, 422, "samples"),
        ({"prompts": ["a"] * 300, "images": ["AAAA"] * 300}, 422, "at most 256 images"),
        (b"{" + b" " * 300_000 + b"}", 413, "exceeds the limit of 200000 bytes"),
        ({"prompts": ["a"] * 4, "images": [b64(good)] * 4}, 413, "images[3]: the request's images decode to more"),
    ]
    for body, status, needle in cases:
        st, resp, _ = post(h.url, "/score", body)
        assert st == status, (needle, st, resp)
        assert needle in resp["detail"], (needle, resp["detail"])
        st, resp, _ = post(h.url, "/score", ok_body)  # the server keeps serving after each bad request
        assert st == 200, (needle, resp)
    bomb_detail = post(h.url, "/score", {"prompts": ["a"], "images": [b64(bomb)]})[1]["detail"]
    assert "expected at most 4096 pixels" in bomb_detail
    _, info = get(h.url, "/info")
    assert info["stats"]["client_errors"] == len(cases) + 1 and info["stats"]["ok"] == len(cases)


def test_streamed_body_over_the_limit_is_413_before_it_is_all_read(start):
    h = start(max_body_bytes=10_000)
    u = urlsplit(h.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def chunks():  # no Content-Length: chunked transfer, 8 MB announced nowhere
        for _ in range(800):
            yield b" " * 10_000

    try:
        conn.request("POST", "/score", body=chunks(), headers={"Content-Type": "application/json"},
                     encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413 and "more than the limit of 10000 bytes" in json.loads(r.read())["detail"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered 413 and closed while we were still sending: also a refusal
    finally:
        conn.close()
    assert post(h.url, "/score", {"prompts": ["a"], "images": [b64(png_bytes(0))]})[0] == 200


def test_bearer_token(start):
    h = start(token="s3cret-token")
    body = {"prompts": ["a"], "images": [b64(png_bytes(0))]}
    assert post(h.url, "/score", body)[0] == 401
    st, resp, hdrs = post(h.url, "/score", body, {"Authorization": "Bearer wrong"})
    assert st == 401 and "Bearer" in resp["detail"] and hdrs.get("www-authenticate") == "Bearer"
    assert post(h.url, "/score", body, {"Authorization": "Basic s3cret-token"})[0] == 401
    assert get(h.url, "/info")[0] == 401
    assert get(h.url, "/health") == (200, {"status": "ok"})  # liveness probes need no token
    assert post(h.url, "/score", body, {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert get(h.url, "/info", {"Authorization": "Bearer s3cret-token"})[0] == 200


def test_server_side_paths_only_under_the_allowed_root(start, scorer, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    data = png_bytes(5)
    (root / "sub" / "a.png").write_bytes(data)
    (outside / "secret.png").write_bytes(png_bytes(6))
    os.symlink(outside / "secret.png", root / "link.png")
    h_off = start()
    st, resp, _ = post(h_off.url, "/score", {"prompts": ["a"], "paths": ["sub/a.png"]})
    assert st == 403 and "--allowed-root" in resp["detail"]
    h = start(allowed_root=root)
    st, resp, _ = post(h.url, "/score", {"prompts": ["a", "b"], "paths": ["sub/a.png", str(root / "sub" / "a.png")]})
    assert st == 200, resp
    _assert_matches(resp, _local(scorer, ["a", "b"], [data, data]))
    for bad in ["../outside/secret.png", "sub/../../outside/secret.png", str(outside / "secret.png"), "link.png",
                "/etc/passwd"]:
        st, resp, _ = post(h.url, "/score", {"prompts": ["x", "y"], "paths": ["sub/a.png", bad]})
        assert st == 403 and resp["detail"].startswith("paths[1]: path is outside"), (bad, resp)
    st, resp, _ = post(h.url, "/score", {"prompts": ["a"], "paths": ["sub/missing.png"]})
    assert st == 400 and "paths[0]" in resp["detail"] and str(root) not in resp["detail"]
    assert post(h.url, "/score", {"prompts": ["a"], "paths": ["sub/a.png"]})[0] == 200


def _concurrent(url, bodies):
    out = [None] * len(bodies)

    def one(i):
        out[i] = post(url, "/score", bodies[i])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def test_concurrent_requests_are_micro_batched_and_sliced_correctly(start, scorer):
    datas = [png_bytes(10 + i) for i in range(6)]
    prompts = [f"prompt number {i}" for i in range(6)]
    local = _local(scorer, prompts, datas)
    local_sub = _local(scorer, prompts, datas, dims=["aesthetics"])
    h = start(max_batch=16, max_wait_ms=400)
    bodies = [{"prompts": [prompts[i]], "images": [b64(datas[i])]} for i in range(6)]
    bodies += [{"prompts": [prompts[i]], "images": [b64(datas[i])], "dims": ["aesthetics"]} for i in range(2)]
    res = _concurrent(h.url, bodies)
    for i, (st, body, _) in enumerate(res):
        assert st == 200, body
        _assert_matches(body, local_sub if i >= 6 else local, [i % 6])
    assert res[6][1]["dims"] == ["aesthetics"]
    stats = get(h.url, "/info")[1]["stats"]
    assert stats["jobs"] == 8 and stats["batched_images"] == 8
    assert stats["batches"] < 8 and stats["max_batch_images"] >= 2  # several requests shared one forward
    # one request per forward when max_batch is 1
    h1 = start(max_batch=1, max_wait_ms=400)
    res = _concurrent(h1.url, bodies[:4])
    assert all(st == 200 for st, _, _ in res)
    stats = get(h1.url, "/info")[1]["stats"]
    assert stats["batches"] == 4 and stats["max_batch_images"] == 1


def test_a_disconnecting_client_does_not_break_the_batch(start, scorer):
    datas = [png_bytes(20 + i) for i in range(3)]
    local = _local(scorer, ["p0", "p1", "p2"], datas)
    h = start(max_wait_ms=800)
    u = urlsplit(h.url)
    payload = json.dumps({"prompts": ["gone"], "images": [b64(datas[0])]}).encode()
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    time.sleep(0.1)
    s.close()  # gone before its batch runs
    half = socket.create_connection((u.hostname, u.port))
    half.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(payload)).encode() + b"\r\n\r\n" + payload[:100])
    time.sleep(0.1)
    half.close()  # gone in the middle of its body
    res = _concurrent(h.url, [{"prompts": [f"p{i}"], "images": [b64(datas[i])]} for i in range(3)])
    for i, (st, body, _) in enumerate(res):
        assert st == 200, body
        _assert_matches(body, local, [i])
    assert post(h.url, "/score", {"prompts": ["p0"], "images": [b64(datas[0])]})[0] == 200
    stats = get(h.url, "/info")[1]["stats"]
    # the gone client's job was cancelled and dropped before its batch ran; the others were all scored
    assert stats["dropped_jobs"] == 1 and stats["batched_images"] == 4 and stats["queued_images"] == 0
    assert stats["ok"] == 4 and stats["client_errors"] == 2 and stats["server_errors"] == 0


def test_graceful_shutdown_finishes_in_flight_requests(start, scorer):
    data = png_bytes(30)
    h = start(max_wait_ms=1500)  # the request sits in the batcher's queue when shutdown starts
    out = {}
    t = threading.Thread(target=lambda: out.update(r=post(h.url, "/score", {"prompts": ["p"], "images": [b64(data)]})))
    t.start()
    end = time.monotonic() + 20
    while h.app.state.batcher.stats.jobs == 0 and time.monotonic() < end:
        time.sleep(0.01)
    assert h.app.state.batcher.stats.jobs == 1
    h.stop()
    t.join(30)
    st, body, _ = out["r"]
    assert st == 200
    _assert_matches(body, _local(scorer, ["p"], [data]))
    u = urlsplit(h.url)
    with pytest.raises(OSError):
        socket.create_connection((u.hostname, u.port), timeout=2)


def test_reasoning_requests_when_allowed_are_batched_apart_from_direct_ones(start, scorer):
    datas = [png_bytes(50), png_bytes(51)]
    h = start(allow_reasoning=True, max_samples=2, max_wait_ms=300)
    bodies = [{"prompts": ["p0"], "images": [b64(datas[0])], "reasoning": True, "dims": ["alignment"]},
              {"prompts": ["p1"], "images": [b64(datas[1])]}]
    (st0, r0, _), (st1, r1, _) = _concurrent(h.url, bodies)
    assert st0 == 200 and st1 == 200, (r0, r1)
    local_r = scorer.score(["p0"], [load_image(datas[0])], dims=["alignment"], reasoning=True)  # greedy chains
    _assert_matches(r0, local_r)
    _assert_matches(r1, _local(scorer, ["p1"], datas[1:]))
    stats = get(h.url, "/info")[1]["stats"]
    assert stats["batches"] == 2 and stats["max_batch_images"] == 1  # one key per forward batch
    st, resp, _ = post(h.url, "/score", {**bodies[0], "samples": 3})
    assert st == 422 and "samples: expected at most 2" in resp["detail"]
