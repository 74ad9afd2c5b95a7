"""The zreward reward in the call forms of the RL harnesses people run (no torch import here).

What is implemented: two adapters around any base reward `reward(prompts, images) -> (scores (B,), stds (B,))` —
`ScorerRewardFn` (a local Scorer) or `RewardClient.reward_fn` (a `zreward serve` server):

- `as_trl_reward(reward)`: TRL's `reward_funcs` form `fn(prompts, completions, **kwargs) -> list[float]`. Prompts
  may be strings or conversational message lists (the last user text is used); completions are the generated
  images (PIL images, paths, (3, H, W) tensors/arrays in [0, 1]) or, in conversational form, a message list (or dict)
  carrying one `{"type": "image", "image": ...}` item. The function has a `__name__` (TRL logs rewards under it).
- `as_flow_grpo_reward(reward)`: Flow-GRPO's (and DanceGRPO-style) form
  `fn(images, prompts, metadata) -> (scores, meta)`: images as the harness passes them — a (B, 3, H, W) float
  tensor in [0, 1], a (B, H, W, 3) uint8 array or a list of PIL images —, scores a float32 numpy array (B,),
  meta = {"std": (B,) the reward's own uncertainty Σ_d w_d σ_d / Σ_d w_d}. `metadata` is accepted and ignored.

The uncertainty-aware reward is the base reward's option: `uncertainty_lambda=λ` scores Σ_d w_d (μ_d − λ·σ_d)/Σ_d w_d,
which ranks an image the scorer is unsure about below one with the same mean it is sure about (λ = 0: the plain
expected score). Nothing is resized here: the scorer's own preprocessing decides the input size.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

BaseReward = Callable[[list[str], Any], tuple[Any, Any]]


def prompt_text(prompt: Any, where: str = "prompts[0]") -> str:
    """A prompt string from a string or a conversational message list (the last user message's text)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for msg in reversed(prompt):
            if isinstance(msg, dict) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                texts = [c.get("text", "") for c in content or [] if isinstance(c, dict) and c.get("type") == "text"]
                if texts:
                    return " ".join(texts)
    raise ValueError(f"{where}: expected a string or a message list with a user text, got {type(prompt).__name__}")


def completion_image(completion: Any, where: str = "completions[0]") -> Any:
    """The image of a completion: itself, a dict's "image", or the image item of a (conversational) message list."""
    if isinstance(completion, dict) and "image" in completion:
        return completion["image"]
    if isinstance(completion, dict) and "content" in completion:
        completion = [completion]
    if isinstance(completion, list) and completion and isinstance(completion[0], dict):
        for msg in completion:
            for item in msg.get("content", []) if isinstance(msg.get("content"), list) else []:
                if isinstance(item, dict) and item.get("type") == "image" and item.get("image") is not None:
                    return item["image"]
        raise ValueError(f"{where}: a message list without an {{'type': 'image', 'image': ...}} item")
    return completion


def _floats(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().float() if hasattr(x, "detach") else x, dtype=np.float32)


def as_trl_reward(reward: BaseReward, name: str = "zreward") -> Callable[..., list[float]]:
    """TRL `reward_funcs` form of `reward` (see the module docstring)."""

    def fn(prompts: list, completions: list, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        texts = [prompt_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        images = [completion_image(c, f"completions[{i}]") for i, c in enumerate(completions)]
        scores, _ = reward(texts, images)
        return _floats(scores).tolist()

    fn.__name__ = name
    return fn


def as_flow_grpo_reward(reward: BaseReward) -> Callable[..., tuple[np.ndarray, dict]]:
    """Flow-GRPO form `fn(images, prompts, metadata) -> (scores (B,), {"std": (B,)})` of `reward`."""

    def fn(images, prompts, metadata=None) -> tuple[np.ndarray, dict]:
        texts = [prompt_text(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        scores, stds = reward(texts, images)
        return _floats(scores), {"std": _floats(stds)}

    return fn
