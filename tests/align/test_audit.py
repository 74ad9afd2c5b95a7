"""The audit row: mean reward, judges' means and the per-image agreement of reward and judge (hand-computed)."""
import math

import numpy as np
import pytest
import torch

from zreward.align.audit import audit_row


class PerImageJudge:
    watch = ("k",)

    def __init__(self, values):
        self.values = np.asarray(values, float)

    def scores(self, prompts, images):
        return {"k": self.values, "other": self.values * 2}

    def __call__(self, prompts, images):  # pragma: no cover - audit_row prefers scores()
        raise AssertionError("audit_row must read per-image scores once, not the means")


class MeansOnlyJudge:
    watch = ("m",)

    def __call__(self, prompts, images):
        return {"m": 3.5}


def test_audit_row_reward_judge_correlation_by_hand():
    images = torch.zeros(3, 3, 4, 4)
    row = audit_row(7, ["a", "b", "c"], images, torch.tensor([1.0, 2.0, 3.0]),
                    [PerImageJudge([1.0, 2.0, 4.0]), MeansOnlyJudge()])
    # x = (1, 2, 3), y = (1, 2, 4): cov = 3, var_x = 2, var_y = 42/9 → r = 9 / √84
    assert row["step"] == 7 and row["reward"] == pytest.approx(2.0)
    assert row["k"] == pytest.approx(7 / 3) and row["other"] == pytest.approx(14 / 3) and row["m"] == 3.5
    assert row["k:reward_plcc"] == pytest.approx(9 / math.sqrt(84))
    assert "other:reward_plcc" not in row and "m:reward_plcc" not in row  # watched keys of per-image judges only


def test_audit_row_constant_reward_has_no_correlation():
    row = audit_row(0, ["a", "b"], torch.zeros(2, 3, 4, 4), torch.tensor([4.0, 4.0]), [PerImageJudge([1.0, 2.0])])
    assert row["k:reward_plcc"] is None  # JSON null, not NaN
