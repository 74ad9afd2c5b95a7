"""RewardClient: identical numbers to local scoring, every image input kind, retries, and a bounded load test."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from serve_helpers import png_bytes

from zreward.client import RewardClient, RewardServerError
from zreward.data.images import load_image


def test_reward_fn_matches_the_local_scorer_reward_fn(start, scorer):
    from zreward.align.reward_fn import ScorerRewardFn

    h = start(max_wait_ms=0)
    # values on the 8-bit grid: PNG encoding is then lossless and remote == local up to float round-off
    x = torch.randint(0, 256, (3, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float() / 255
    prompts = ["a red circle", "a blue square", "two stars"]
    client = RewardClient(h.url)
    for lam in (0.0, 0.5):
        remote, local = client.reward_fn(prompts, x, uncertainty_lambda=lam), ScorerRewardFn(
            scorer, uncertainty_lambda=lam)(prompts, x)
        for r, lo in zip(remote, local):
            assert r.dtype == torch.float32 and r.shape == (3,)
            torch.testing.assert_close(r, lo, atol=1e-5, rtol=0)
    out = client.score(prompts, x)
    torch.testing.assert_close(client.reward_fn(prompts, x)[0], torch.from_numpy(out["overall"]), atol=1e-6, rtol=0)
    # a custom dims/weights choice goes through the same formula: one dim with weight 1 → its mean
    s, sd = client.reward_fn(prompts, x, dims=["realism"], weights=[2.0])
    torch.testing.assert_close(s, torch.from_numpy(client.score(prompts, x, dims=["realism"])["mean"][:, 0]))


def test_every_image_input_kind_gives_the_same_scores(start, scorer, tmp_path):
    datas = [png_bytes(40), png_bytes(41, 40, 24)]
    paths = []
    for i, d in enumerate(datas):
        paths.append(tmp_path / f"im{i}.png")
        paths[-1].write_bytes(d)
    h = start(max_wait_ms=0, allowed_root=tmp_path)
    client = RewardClient(h.url)
    prompts = ["a red circle", "a green star"]
    local = scorer.score(prompts, [load_image(d) for d in datas])
    pils = [load_image(d) for d in datas]
    arrays = [np.asarray(p, dtype=np.float32).transpose(2, 0, 1) / 255 for p in pils]
    for images, kw in [(datas, {}), (paths, {}), ([str(p) for p in paths], {}), (pils, {}), (arrays, {}),
                       ([p.name for p in paths], {"server_paths": True})]:
        out = client.score(prompts, images, **kw)
        np.testing.assert_allclose(out["probs"], local.probs.numpy(), atol=1e-5)
        np.testing.assert_allclose(out["mean"], local.mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(out["std"], local.std.numpy(), atol=1e-5)
        np.testing.assert_allclose(out["overall"], local.overall.numpy(), atol=1e-5)
        assert out["dims"] == scorer.dims and out["levels"].tolist() == scorer.levels.tolist()
    # chunking: 2 requests of 1 image give the same result
    out = RewardClient(h.url, chunk_size=1).score(prompts, datas)
    np.testing.assert_allclose(out["overall"], local.overall.numpy(), atol=1e-5)


def test_client_errors_are_not_retried_and_name_the_field(start):
    h = start(token="tok")
    with pytest.raises(RewardServerError) as e:
        RewardClient(h.url, retries=3, backoff=5).score(["a"], [png_bytes(0)])  # no token: 401, at once
    assert e.value.status == 401
    client = RewardClient(h.url, token="tok", retries=3, backoff=5)
    t0 = time.monotonic()
    with pytest.raises(RewardServerError) as e:
        client.score(["a"], [png_bytes(0)], dims=["beauty"])
    assert e.value.status == 422 and "dims[0]: unknown dimension 'beauty'" in e.value.detail
    assert time.monotonic() - t0 < 5  # no backoff sleep happened
    assert client.score(["a"], [png_bytes(0)])["probs"].shape == (1, 4, 9)


class _Flaky(BaseHTTPRequestHandler):
    """Answers the scripted statuses in order (then 200 with a one-image result)."""

    script: list = []
    hits: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).hits.append(time.monotonic())
        status = self.script.pop(0) if self.script else 200
        body = {"dims": ["alignment"], "levels": [1.0, 2.0], "results": [
            {"probs": [[0.25, 0.75]], "mean": [1.75], "std": [0.433], "overall": 1.75}]} if status == 200 \
            else {"detail": f"scripted {status}"}
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0.3")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def flaky():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_retries_with_backoff_on_5xx_429_and_connection_errors(flaky):
    _, url = flaky
    _Flaky.script, _Flaky.hits = [503, 429, 500], []
    out = RewardClient(url, retries=3, backoff=0.05).score(["a"], [png_bytes(0)])
    assert out["mean"].tolist() == [[1.75]] and len(_Flaky.hits) == 4
    gaps = np.diff(_Flaky.hits)
    assert gaps[0] >= 0.05 and gaps[1] >= 0.3 and gaps[2] >= 0.2  # backoff·2^k, Retry-After honoured
    _Flaky.script, _Flaky.hits = [503] * 5, []
    with pytest.raises(RewardServerError) as e:
        RewardClient(url, retries=2, backoff=0.01).score(["a"], [png_bytes(0)])
    assert e.value.status == 503 and len(_Flaky.hits) == 3
    _Flaky.script, _Flaky.hits = [400], []
    with pytest.raises(RewardServerError):
        RewardClient(url, retries=3, backoff=0.01).score(["a"], [png_bytes(0)])
    assert len(_Flaky.hits) == 1
    # nothing listening: connection refused on every attempt, retried, then a clear error
    srv_port = flaky[0].server_address[1]
    flaky[0].shutdown()
    flaky[0].server_close()
    t0 = time.monotonic()
    with pytest.raises(RewardServerError) as e:
        RewardClient(f"http://127.0.0.1:{srv_port}", retries=2, backoff=0.1).health()
    assert e.value.status is None and "cannot reach the server" in str(e.value)
    assert time.monotonic() - t0 >= 0.1 + 0.2


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_bounded_load_test_concurrent_clients(start, scorer):
    """4 clients × 6 requests × 2 images on loopback: 0 errors, exact results, memory bounded, queue drained."""
    n_clients, n_req, per = 4, 6, 2
    datas = [png_bytes(100 + i) for i in range(8)]
    local = scorer.score([f"p{i}" for i in range(8)], [load_image(d) for d in datas])
    h = start(max_batch=8, max_wait_ms=20)
    RewardClient(h.url).score(["p0"], datas[:1])  # warm-up
    rss0 = _rss_mb()
    errors, lat, mismatch = [], [], []

    def worker(c):
        client = RewardClient(h.url, timeout=60, retries=0)
        for r in range(n_req):
            idx = [(c * n_req + r + k) % 8 for k in range(per)]
            t0 = time.monotonic()
            try:
                out = client.score([f"p{i}" for i in idx], [datas[i] for i in idx])
            except Exception as e:  # noqa: BLE001 (counted and reported)
                errors.append(repr(e))
                continue
            lat.append(time.monotonic() - t0)
            if np.abs(out["probs"] - local.probs[idx].numpy()).max() > 1e-5:
                mismatch.append(idx)

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(c,)) for c in range(n_clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    wall = time.monotonic() - t0
    assert not errors and not mismatch and len(lat) == n_clients * n_req
    assert wall < 120
    stats = RewardClient(h.url).info(refresh=True)["stats"]
    assert stats["queued_images"] == 0 and stats["server_errors"] == 0
    assert stats["batched_images"] == 1 + n_clients * n_req * per  # warm-up + load
    assert _rss_mb() - rss0 < 300, "memory grew by more than 300 MB over 48 images"
