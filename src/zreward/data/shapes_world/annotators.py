"""ShapesWorld simulated annotators ("the humans"): ratings, label histograms, pairwise votes, the ceiling.

Implements "Simulated annotators" of the spec `docs/shapes-world.md`:
- a pool of R raters with persistent identities: rater r has bias b_{r,d} ~ N(0, 0.25^2) per dimension and
  dimension weights w_r ~ Dirichlet(20 * [0.4, 0.2, 0.2, 0.2]); the pool is drawn once from
  `default_rng([seed, 7])` and shared by every split of a dataset;
- rating_{r,d} = q(true_d + b_{r,d} + eps), eps ~ N(0, sigma_d^2), sigma = (0.30, 0.40, 0.60, 0.35);
- per-image label = histogram of the R ratings over the 9 levels, MOS = mean, std = population std (ddof 0);
- pairwise preference: rater r computes overall = sum_d w_{r,d} rating_{r,d} for both images and votes for the
  higher one, or "tie" when |difference| < 0.25; the pair label is the side with more votes, "tie" when equal;
- annotator ceiling: accuracy on non-tie pairs of the oracle overall sum_d mean_w_d true_d. An oracle tie
  (equal overall) on a non-tie pair counts as half right: a continuous-score model matching the oracle would
  break such ties at random.
All functions are vectorised over images and raters; the caller passes the per-image generator, so results do
not depend on how the work is split across processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zreward.data.shapes_world.oracle import DIMS, MEAN_WEIGHTS

SIGMA: tuple[float, ...] = (0.30, 0.40, 0.60, 0.35)
BIAS_STD = 0.25
DIRICHLET_CONCENTRATION = 20.0
TIE_MARGIN = 0.25
N_LEVELS = 9


def q_array(v: np.ndarray) -> np.ndarray:
    """Vectorised spec quantiser floor(2 * clip(v, 1, 5) + 0.5) / 2."""
    return np.floor(2 * np.clip(v, 1.0, 5.0) + 0.5) / 2


@dataclass
class RaterPool:
    """Persistent rater identities.

    Attributes:
        bias: (R, 4) per-rater per-dimension bias.
        weights: (R, 4) per-rater dimension weights (rows sum to 1).
    """

    bias: np.ndarray
    weights: np.ndarray

    @classmethod
    def create(cls, n_raters: int, seed: int) -> RaterPool:
        if n_raters < 1:
            raise ValueError(f"raters: expected at least 1, got {n_raters}")
        rng = np.random.default_rng([seed, 7])
        bias = rng.normal(0.0, BIAS_STD, size=(n_raters, len(DIMS)))
        weights = rng.dirichlet(DIRICHLET_CONCENTRATION * np.asarray(MEAN_WEIGHTS), size=n_raters)
        return cls(bias=bias, weights=weights)

    @property
    def n(self) -> int:
        return self.bias.shape[0]

    def to_json(self) -> list[dict]:
        return [{"rater": f"r{r}", "bias": dict(zip(DIMS, map(float, self.bias[r].round(4)))),
                 "weights": dict(zip(DIMS, map(float, self.weights[r].round(4))))} for r in range(self.n)]

    def rate(self, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ratings of N images by every rater.

        Args:
            true: (N, 4) oracle scores.
            rng: generator for the rating noise (draws N*R*4 normals).
        Returns:
            (N, R, 4) ratings on the 9-level scale.
        """
        eps = rng.normal(0.0, 1.0, size=(true.shape[0], self.n, len(DIMS))) * np.asarray(SIGMA)
        return q_array(true[:, None, :] + self.bias[None] + eps)

    def votes(self, ratings_a: np.ndarray, ratings_b: np.ndarray) -> np.ndarray:
        """Per-rater votes for P pairs.

        Args:
            ratings_a, ratings_b: (P, R, 4) ratings of the two images of each pair.
        Returns:
            (P, R) int: +1 vote for a, -1 for b, 0 tie.
        """
        diff = ((ratings_a - ratings_b) * self.weights[None]).sum(-1)  # (P, R)
        return np.where(diff >= TIE_MARGIN, 1, np.where(diff <= -TIE_MARGIN, -1, 0))


def histograms(ratings: np.ndarray) -> np.ndarray:
    """(N, R, 4) ratings -> (N, 4, 9) integer counts over the levels 1.0..5.0."""
    idx = np.rint((ratings - 1.0) * 2).astype(np.int64)  # (N, R, 4) level index
    onehot = idx[..., None] == np.arange(N_LEVELS)  # (N, R, 4, 9)
    return onehot.sum(axis=1)


def pair_labels(votes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(P, R) votes -> labels ("a"/"b"/"tie") and (P, 3) counts [a, b, tie]."""
    counts = np.stack([(votes == 1).sum(1), (votes == -1).sum(1), (votes == 0).sum(1)], axis=1)
    labels = np.where(counts[:, 0] > counts[:, 1], "a", np.where(counts[:, 1] > counts[:, 0], "b", "tie"))
    return labels.tolist(), counts


def judge_pairs(pool: RaterPool, ratings: np.ndarray, ia: np.ndarray, ib: np.ndarray, dim: str
                ) -> tuple[list[str], np.ndarray]:
    """Pairs (ia[p], ib[p]) of one prompt's images judged on `dim`: "overall" by the raters' weighted votes
    (`RaterPool.votes`), a dimension by the sign of each rater's rating difference. ratings: (K, R, 4).
    Returns `pair_labels` of those votes: P labels and (P, 3) counts [a, b, tie]."""
    if dim == "overall":
        votes = pool.votes(ratings[ia], ratings[ib])  # (P, R)
    else:
        k = DIMS.index(dim)
        votes = np.sign(ratings[ia, :, k] - ratings[ib, :, k]).astype(int)
    return pair_labels(votes)


def ceiling(true_a: np.ndarray, true_b: np.ndarray, labels: list[str]) -> tuple[float, int]:
    """Annotator ceiling: accuracy of the mean-weight oracle overall on non-tie pairs.

    Args:
        true_a, true_b: (P, 4) oracle scores of the two sides.
        labels: P pair labels.
    Returns:
        (accuracy, number of non-tie pairs); accuracy is nan when there is none.
    """
    w = np.asarray(MEAN_WEIGHTS)
    d = np.round((true_a - true_b) @ w, 9)  # (P,); rounding makes float-noise differences exact ties
    lab = np.asarray(labels)
    keep = lab != "tie"
    if not keep.any():
        return float("nan"), 0
    dk = d[keep]
    correct = np.where(dk == 0, 0.5, np.where(lab[keep] == "a", dk > 0, dk < 0))
    return float(correct.mean()), int(keep.sum())
