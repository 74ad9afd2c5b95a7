"""One client's bad request never fails another's: inputs refused before batching (422 naming field and index),
and a batch that fails anyway is re-run job by job so only the culprit gets an error — its own."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from zreward.data.images import load_image


class Flaky:
    """A scorer that fails any call containing a prompt with `marker` (an unforeseen model failure)."""

    def __init__(self, inner, marker: str, exc: type[Exception]):
        self.inner, self.marker, self.exc, self.calls = inner, marker, exc, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, prompts, images, **kw):
        self.calls.append(len(prompts))
        bad = [p for p in prompts if self.marker in p]
        if bad:
            raise self.exc(f"cannot score {bad[0]!r}")
        return self.inner.score(prompts, images, **kw)


def _together(hostile, url, bodies):
    out, gate = {}, threading.Barrier(len(bodies))

    def send(k):
        gate.wait()
        out[k] = hostile.request(url, hostile.Case(str(k), bodies[k]))

    ts = [threading.Thread(target=send, args=(k,)) for k in range(len(bodies))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [out[k] for k in range(len(bodies))]


@pytest.mark.parametrize("exc,status", [(ValueError, 422), (RuntimeError, 500)])
def test_six_good_and_one_poisoned_sent_together(hostile, adv_scorer, serve, exc, status):
    flaky = Flaky(adv_scorer, "POISON", exc)
    h = serve(flaky, max_wait_ms=200, max_batch=16)
    goods = [hostile.png(200 + k, 24 + 4 * k, 32) for k in range(6)]
    prompts = [f"{k} red circles" for k in range(6)]
    bodies = [hostile.body([p], [hostile.b64(g)]) for p, g in zip(prompts, goods)]
    bodies.insert(3, hostile.body(["a POISON cat"], [hostile.b64(goods[0])]))
    res = _together(hostile, h.url, bodies)
    assert max(flaky.calls) == 7  # the seven requests really shared one batch, which failed and was re-run
    ref = adv_scorer.score(prompts, [load_image(g) for g in goods])
    for k, (st, text) in enumerate(r for i, r in enumerate(res) if i != 3):
        assert st == 200, text
        got = json.loads(text)["results"][0]
        np.testing.assert_allclose(got["probs"], ref.probs[k].numpy(), atol=1e-5)
        assert abs(got["overall"] - float(ref.overall[k])) < 1e-5
    st, text = res[3]
    assert st == status and "cannot score 'a POISON cat'" in text
    assert not any(p in text for p in prompts)  # its own message only


def test_prefilter_names_field_and_index(hostile, adv_scorer, serve):
    h = serve(adv_scorer, max_wait_ms=0, max_prompt_tokens=64, max_request_tokens=100)
    img = hostile.b64(hostile.png(0))
    cases = [
        ({"prompts": ["ok", "ok", "ok", "a <|image_pad|> b"]}, 422,
         "prompts[3]: contains the reserved token '<|image_pad|>'"),
        ({"prompts": ["ok", "<|vision_start|>"]}, 422, "prompts[1]: contains the reserved token"),
        ({"prompts": ["<|im_start|>user"]}, 422, "prompts[0]: contains the reserved token '<|im_start|>'"),
        ({"prompts": ["ok", "x\ud800"]}, 422,
         "prompts[1]: expected valid Unicode text; character 1 is a lone surrogate"),
        ({"prompts": ["猫" * 200]}, 422, "prompts[0]: expected at most 64 tokens (max_prompt_tokens), got"),
        ({"prompts": ["猫" * 20] * 6}, 422, "prompts: expected at most 100 prompt tokens per request"),
    ]
    for extra, status, msg in cases:
        b = {**extra, "images": [img] * len(extra["prompts"])}
        st, text = hostile.request(h.url, hostile.Case("c", json.dumps(b).encode()))
        assert st == status and msg in json.loads(text)["detail"], (extra, st, text)
    wide = hostile.body(["a", "b"], [img, hostile.b64(hostile.png(1, 1, 300))])
    st, text = hostile.request(h.url, hostile.Case("wide", wide))
    assert st == 422 and json.loads(text)["detail"].startswith("images[1]: image aspect ratio: expected at most 200:1")
    deep = b'{"prompts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    st, text = hostile.request(h.url, hostile.Case("deep", deep))
    assert st == 400 and "nested too deeply" in text


def test_unusable_paths_are_400_naming_the_index(hostile, adv_scorer, serve, tmp_path):
    root = hostile.make_root(tmp_path / "root")
    h = serve(adv_scorer, max_wait_ms=0, allowed_root=root)
    for p, status, msg in [("x" * 5000, 400, "paths[1]: "), ("loop_a/x.png", 400, "paths[1]: "),
                           ("\ud800.png", 400, "paths[1]: expected valid Unicode text"),
                           ("escape/passwd", 403, "paths[1]: path is outside"),
                           ("wide.png", 422, "paths[1]: image aspect")]:
        b = json.dumps({"prompts": ["a", "b"], "paths": ["good.png", p]}).encode()
        st, text = hostile.request(h.url, hostile.Case("p", b))
        assert st == status and json.loads(text)["detail"].startswith(msg), (p, st, text)
