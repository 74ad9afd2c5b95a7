"""The hostile benchmark against a real loopback server: ≥ 150 hostile requests, poisoned batches, idle/slow-loris
connections → 0 responses ≥ 500, 0 good requests failed by another client, 0 silent wrong results."""
from __future__ import annotations

import pytest


def test_hostile_suite_no_5xx_no_victims_no_silent_wrong(hostile, adv_scorer, serve, tmp_path):
    root = hostile.make_root(tmp_path / "root")
    h = serve(adv_scorer, max_wait_ms=50, allowed_root=root, header_timeout_s=1.0, max_client_connections=16)
    fig = hostile.run_all(h.url, adv_scorer, trials=1, n_idle=40, header_timeout=1.0)
    s, p, c = fig["singles"], fig["poisoned"], fig["connections"]
    print(fig)  # shown when an assertion fails
    assert s["n"] >= 150
    assert s["ge500"] == [] and s["ok_200"] == [] and s["other"] == []
    assert p["good_sent"] == 24 and p["victims"] == 0 and p["wrong"] == 0
    assert all(st == [422] for st in p["poison_status"].values()), p["poison_status"]
    a = fig["attacked"]
    assert a["calls"] == 8 and a["failed"] == a["wrong"] == a["poison_ge500"] == 0 and a["poisons_sent"] > 0
    # 40 idle connections from 127.0.0.2 (cap 16): that address is refused, 127.0.0.1 and /health are not
    assert (c["health"], c["score"], c["attacker_health"], c["attacker_score"]) == (200, 200, 200, 503)
    # closed by the 1 s header timeout (the harness waits at most header timeout + 5 s)
    assert c["idle_closed"] == 40 and c["slowloris_closed_after_s"] is not None
    assert fig["responses_ge500"] == fig["good_failed_by_other"] == fig["silent_wrong"] == 0


@pytest.mark.slow
def test_hostile_benchmark_full_figures(hostile):
    assert hostile.main(["--trials", "3", "--idle", "530"]) == 0
