"""`models.batch.length_chunks`: rows cut by length where the padded token count is smallest (hand-computed)."""
from __future__ import annotations

from zreward.models.batch import length_chunks


def test_cut_where_padding_is_least():
    # sorted lengths 60, 60, 62, 100: one forward pads to 4 × 100 = 400 tokens; cuts after 1 / 2 / 3 rows cost
    # 60 + 300 = 360, 120 + 200 = 320, 186 + 100 = 286 → cut after the third row (saves 28.5%)
    assert length_chunks([100, 60, 62, 60]) == [[1, 3, 2], [0]]


def test_one_forward_when_the_cut_saves_little():
    # 90, 95, 100, 100: one forward 400; the best cut (after row 1) 90 + 300 = 390 saves 2.5% < 10%
    assert length_chunks([100, 90, 95, 100]) == [[1, 2, 0, 3]]
    assert length_chunks([100, 90, 95, 100], min_saving=0.02) == [[1], [2, 0, 3]]
    assert length_chunks([7]) == [[0]] and length_chunks([]) == [[]]
