from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.metrics import accuracy_by_dim, accuracy_with_ties, label_signs, pairwise_accuracy


def _acc_at(d, h, eps):
    """Direct acc_23 at one threshold: predicted tie iff |Δ| ≤ eps."""
    pred = np.where(np.abs(d) <= eps, 0, np.sign(d))
    return float(np.mean(pred == h))


def _brute_acc23(d, h):
    """Reference: evaluate every candidate ε in {0} ∪ {|Δ|} directly, take the max (smallest ε on ties)."""
    cands = np.unique(np.concatenate([[0.0], np.abs(d)]))
    accs = [_acc_at(d, h, e) for e in cands]
    k = int(np.argmax(accs))
    return accs[k], cands[k]


def _per_position_acc23(d, h):
    """The known-buggy variant: flips pairs to "tie" one sorted position at a time, so a group of pairs sharing one
    |Δ| is also scored half-flipped (a threshold that does not exist)."""
    order = np.argsort(np.abs(d), kind="stable")
    best = _acc_at(d, h, -1.0)
    for k in range(1, len(d) + 1):
        pred = np.sign(d).astype(int)
        pred[order[:k]] = 0
        best = max(best, float(np.mean(pred == h)))
    return best


def test_label_signs_strings_and_numbers():
    assert label_signs(["a", "b", "tie"]).tolist() == [1, -1, 0]
    assert label_signs(np.array([1, -1, 0])).tolist() == [1, -1, 0]
    assert label_signs(torch.tensor([1.0, 0.0, -1.0])).tolist() == [1, 0, -1]
    with pytest.raises(ValueError, match=r"labels\[1\] = 'x'"):
        label_signs(["a", "x"])
    with pytest.raises(ValueError, match=r"labels\[2\] = 2"):
        label_signs([1, -1, 2])


def test_pairwise_accuracy_hand_computed_with_prediction_tie_half():
    # pair 0: predicted tie → 0.5; pair 1: a>b, label a → 1; pair 2: a<b, label b → 1; pair 3: human tie → ignored
    sa, sb = [1.0, 2.0, 3.0, 5.0], [1.0, 1.0, 4.0, 1.0]
    assert pairwise_accuracy(sa, sb, ["a", "a", "b", "tie"]) == pytest.approx(2.5 / 3)
    # wrong direction on pair 1 → (0.5 + 0 + 1) / 3
    assert pairwise_accuracy(sa, sb, ["a", "b", "b", "tie"]) == pytest.approx(1.5 / 3)
    # a constant scorer gets exactly chance
    assert pairwise_accuracy(np.ones(4), np.ones(4), ["a", "b", "a", "a"]) == 0.5
    assert np.isnan(pairwise_accuracy([1.0, 2.0], [2.0, 1.0], ["tie", "tie"]))


def test_pairwise_accuracy_torch_and_weights():
    sa, sb = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 2.5])
    labels = [1, 1, -1]                                   # correct, wrong, correct
    assert pairwise_accuracy(sa, sb, labels) == pytest.approx(2 / 3)
    # weights are multiplicities: item 1 twice, item 0 zero → (0 + 0 + 1·1) / 3
    assert pairwise_accuracy(sa, sb, labels, weights=[0, 2, 1]) == pytest.approx(1 / 3)
    out = pairwise_accuracy(sa, sb, labels, weights=np.array([[1, 1, 1], [0, 2, 1]]))
    np.testing.assert_allclose(out, [2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="score_a"):
        pairwise_accuracy([1.0, 2.0], [1.0], ["a", "b"])


def test_acc23_shared_abs_delta_switch_together():
    # Two pairs share |Δ| = 1: a human tie and a correctly ordered pair.
    # ε < 1: tie pair wrong, ordered pair right → 1/2.  ε = 1: tie right, ordered pair now a predicted tie → 1/2.
    d, h = np.array([1.0, 1.0]), np.array([0, 1])
    acc, eps = accuracy_with_ties(d, np.zeros(2), h, return_threshold=True)
    assert acc == pytest.approx(0.5) and eps == 0.0
    # Flipping only the first pair of the group would claim 2/2 — the bug this implementation must not have.
    assert _per_position_acc23(d, h) == 1.0


def test_acc23_hand_computed_best_threshold():
    # Δ = [0.5 (tie), 0.5 (tie), 1.0 (a), −1.5 (b), 0.5 (a)]
    # ε=0: 3/5; ε=0.5: 2 ties right + 1.0 a + −1.5 b, the 0.5 a pair is a predicted tie → 4/5; ε=1: 3/5; ε=1.5: 2/5
    d = np.array([0.5, 0.5, 1.0, -1.5, 0.5])
    h = ["tie", "tie", "a", "b", "a"]
    acc, eps = accuracy_with_ties(d, np.zeros(5), h, return_threshold=True)
    assert acc == pytest.approx(0.8) and eps == 0.5
    assert _per_position_acc23(d, label_signs(h)) == 1.0  # the per-position variant inflates it
    assert accuracy_with_ties(d, np.zeros(5), h, threshold=0.0) == pytest.approx(0.6)
    assert accuracy_with_ties(d, np.zeros(5), h, threshold=1.2) == pytest.approx(0.6)
    assert accuracy_with_ties(d, np.zeros(5), h, threshold=1.5) == pytest.approx(0.4)


def test_acc23_exact_zero_delta_is_a_tie_at_eps_zero():
    # Δ = [0 (tie), 0 (a), 1 (a)]: ε=0 → pair 0 right, pair 1 wrong (predicted tie), pair 2 right → 2/3
    sa, sb = [3.0, 3.0, 4.0], [3.0, 3.0, 3.0]
    assert accuracy_with_ties(sa, sb, [0, 1, 1]) == pytest.approx(2 / 3)
    assert pairwise_accuracy(sa, sb, [0, 1, 1]) == pytest.approx(0.75)  # (0.5 + 1) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_acc23_matches_brute_force_with_many_shared_deltas(seed):
    rng = np.random.default_rng(seed)
    n = 300
    sa = rng.integers(2, 11, n) / 2.0                     # half-point rubric scores: |Δ| values repeat a lot
    sb = rng.integers(2, 11, n) / 2.0
    # humans agree with the sign of a noisy Δ, tie when it is small
    noisy = sa - sb + rng.normal(0, 0.8, n)
    h = np.where(np.abs(noisy) < 1.0, 0, np.sign(noisy)).astype(int)
    acc, eps = accuracy_with_ties(sa, sb, h, return_threshold=True)
    ref_acc, ref_eps = _brute_acc23(sa - sb, h)
    assert acc == pytest.approx(ref_acc) and eps == ref_eps
    assert ref_eps > 0  # the data are built so that calibrating ties helps
    # Integer weights give exactly the metric of the expanded (repeated) sample, per weight row.
    w = rng.integers(0, 3, size=(4, n)).astype(float)
    out, eps_r = accuracy_with_ties(sa, sb, h, weights=w, return_threshold=True)
    for r in range(4):
        rep = w[r].astype(int)
        ref = _brute_acc23(np.repeat(sa - sb, rep), np.repeat(h, rep))
        assert out[r] == pytest.approx(ref[0]) and eps_r[r] == ref[1]


def test_acc23_validates_threshold():
    with pytest.raises(ValueError, match="threshold"):
        accuracy_with_ties([1.0], [0.0], ["a"], threshold=-0.1)


def test_accuracy_by_dim_hand_computed():
    sa = [2.0, 1.0, 3.0, 3.0, 4.0]
    sb = [1.0, 2.0, 3.0, 1.0, 4.5]
    labels = ["a", "a", "tie", "a", "b"]
    dims = ["realism", "realism", "realism", "alignment", "alignment"]
    out = accuracy_by_dim(sa, sb, labels, dims)
    assert list(out) == ["alignment", "realism"]
    assert out["alignment"]["n"] == 2 and out["alignment"]["accuracy"] == 1.0
    r = out["realism"]
    assert r["n"] == 3 and r["n_non_tie"] == 2 and r["accuracy"] == 0.5
    # realism Δ = [1 (a), −1 (a), 0 (tie)]: ε=0 → right, wrong, right = 2/3; ε=1 → wrong, wrong, right = 1/3
    assert r["accuracy_with_ties"] == pytest.approx(2 / 3) and r["tie_threshold"] == 0.0
