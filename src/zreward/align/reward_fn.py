"""A scalar reward function for GRPO-style text-to-image RL harnesses (Flow-GRPO, DanceGRPO, TRL, ...).

What is implemented: `ScorerRewardFn(scorer)(prompts, images) -> (scores, stds)`, a plain callable (no trainer
coupling), and its harness forms `.trl()` (TRL `reward_funcs`: `(prompts, completions, **kwargs) -> list[float]`)
and `.flow_grpo()` (`(images, prompts, metadata) -> (scores, meta)`), see `zreward.align.harness`. For each image
the Scorer's direct-mode level distributions per dimension give mean_d and std_d; then

    score = Σ_d w_d (mean_d − λ·std_d) / Σ_d w_d        (the same formula as `Scorer.reward`)
    std   = Σ_d w_d std_d / Σ_d w_d                     (the reward's own uncertainty, for filtering/weighting)

Images may be a (B, 3, H, W) float tensor in [0, 1], a (B, H, W, 3) uint8 array, or a list of PIL images /
paths / arrays, at any size: the scorer's own preprocessing resizes them (`image_size` resizes tensors first, off
by default). λ > 0 (`uncertainty_lambda`) is the uncertainty-aware reward: at equal mean, the image the scorer is
less sure about scores lower. Scoring runs without gradients in chunks of `batch_size`; for a differentiable reward
(ReFL, DRaFT) call `Scorer.reward` directly (see `zreward.align.tune`).

Example (runs as written; builds a random tiny scorer, so the numbers themselves mean nothing):

    >>> import tempfile, torch
    >>> from zreward.models.tiny import init_tiny
    >>> from zreward.align.reward_fn import ScorerRewardFn
    >>> scorer_dir = init_tiny("qwen2_vl", tempfile.mkdtemp(), preset="tiny")
    >>> reward_fn = ScorerRewardFn(scorer_dir, uncertainty_lambda=0.5)
    >>> scores, stds = reward_fn(["a red circle", "two blue squares"], torch.rand(2, 3, 64, 64))
    >>> scores.shape, stds.shape, bool(((scores >= 1) & (scores <= 5)).all())
    (torch.Size([2]), torch.Size([2]), True)
    >>> trl_fn = reward_fn.trl()    # GRPOTrainer(reward_funcs=[trl_fn], ...)
    >>> len(trl_fn(["a red circle"], [torch.rand(3, 48, 48)]))
    1
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.models.scorer import load_scorer
from zreward.models.level_readout import overall, reward_from_readout
from zreward.align.harness import as_flow_grpo_reward, as_trl_reward


class ScorerRewardFn:
    """`reward_fn(prompts, images) -> (scores (B,), stds (B,))` backed by a zreward Scorer.

    Args:
        scorer: a `Scorer` or a scorer directory.
        dims: dimensions to use (default: all of the scorer's).  weights: per-dim weights (default: the scorer's
            `reward_weights`).  uncertainty_lambda: λ of `mean − λ·std` (default 0).
        image_size: tensors/arrays are bilinearly resized to this side first (None, the default: leave them to
            the scorer's own preprocessing).
        batch_size: images per scorer call.
    """

    def __init__(self, scorer, dims: list[str] | None = None, weights: list[float] | None = None,
                 uncertainty_lambda: float = 0.0, image_size: int | None = None, batch_size: int = 16):
        if isinstance(scorer, (str, Path)):
            scorer = load_scorer(scorer, add_level_tokens=False)
        self.scorer = scorer
        self.dims = scorer.resolve_dims(dims)
        w = scorer.config.weights_for(self.dims) if weights is None else list(weights)
        if len(w) != len(self.dims):
            raise ValueError(f"weights: expected {len(self.dims)} values (one per dim {self.dims}), got {len(w)}")
        self.weights = torch.tensor(w, dtype=torch.float32)
        self.lam = float(uncertainty_lambda)
        self.image_size = image_size
        self.batch_size = batch_size

    def _as_tensor(self, images) -> torch.Tensor | list:
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images: numpy array of shape {images.shape}, expected (B, H, W, 3)")
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / (255.0 if images.dtype == np.uint8 else 1.0)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"images: tensor of shape {tuple(images.shape)}, expected (B, 3, H, W) in [0, 1]")
            x = images.detach().float()
            if self.image_size and x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            return x.clamp(0, 1)
        return list(images)

    def trl(self, name: str = "zreward"):
        """This reward as a TRL `reward_funcs` entry: `fn(prompts, completions, **kwargs) -> list[float]`."""
        return as_trl_reward(self, name)

    def flow_grpo(self):
        """This reward as a Flow-GRPO reward: `fn(images, prompts, metadata) -> (scores, {"std": stds})`."""
        return as_flow_grpo_reward(self)

    def __call__(self, prompts: list[str], images) -> tuple[torch.Tensor, torch.Tensor]:
        """Score B (prompt, image) pairs; returns (scores (B,), stds (B,)) float32 tensors on CPU."""
        imgs = self._as_tensor(images)
        if len(imgs) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(imgs)} images")
        out = self.scorer.score(list(prompts), imgs, dims=self.dims, batch_size=self.batch_size)
        scores = reward_from_readout(out.mean, out.std, self.weights, self.lam)
        stds = overall(out.std, self.weights)
        return scores.float(), stds.float()
