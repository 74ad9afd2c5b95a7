"""`RewardClient`: a Python client for `zreward serve`, standard library HTTP only (urllib), no extra dependency.

What is implemented:
- `RewardClient(url, token=None, timeout=60, retries=3, backoff=0.5)`.
- `.score(prompts, images, dims=None, ...)` → dict with numpy arrays `probs` (B, D, L), `mean` (B, D), `std` (B, D),
  `overall` (B,), plus `dims` and `levels` (L,). Images may be PIL images, file paths (read and sent as base64;
  with `server_paths=True` the paths are sent as they are and resolved under the server's allowed root), encoded
  bytes, or float tensors/arrays in [0, 1] — (B, 3, H, W) / a list of (3, H, W) — which are encoded as 8-bit PNG
  (the rounding to k/255 is the only difference from scoring the float tensor locally). Large lists are sent in
  chunks of `chunk_size` images.
- `.reward_fn(prompts, images) -> (scores (B,), stds (B,))`, float32 torch tensors on CPU, the same signature,
  formula and defaults as the local `zreward.align.reward_fn.ScorerRewardFn`, so a harness can swap local for
  remote scoring: score = Σ_d w_d (mean_d − λ·std_d) / Σ_d w_d, std = Σ_d w_d std_d / Σ_d w_d, with the weights
  the server reports in /info (its scorer's `reward_weights`) unless given. Images are sent at their own size (the
  server's scorer preprocessing decides the input size); `image_size=S` resizes tensors (bilinear) first. With
  λ = 0, scores equal the server's `overall`; λ > 0 is the uncertainty-aware reward.
- `.trl_reward_fn(**opts)` / `.flow_grpo_reward_fn(**opts)`: that reward in TRL's `reward_funcs` form
  `(prompts, completions, **kwargs) -> list[float]` and Flow-GRPO's `(images, prompts, metadata) -> (scores, meta)`
  (`zreward.align.harness`, torch-free like this module).
- Retries with exponential backoff (backoff·2^k seconds, or the server's Retry-After) on connection errors,
  timeouts, 5xx and 429; a 4xx is the caller's fault and raises `RewardServerError` at once with the server's
  message (which names the field and index).
"""
from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from zreward.models.scorer_config import dim_weights
from zreward.align.harness import as_flow_grpo_reward, as_trl_reward

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RewardServerError(RuntimeError):
    """The server answered with an error (4xx, or 5xx after all retries).

    Attributes:
        status: HTTP status code (None when the server could not be reached).  detail: the server's message.
    """

    def __init__(self, status: int | None, detail: str, url: str = ""):
        super().__init__(f"{url}: HTTP {status}: {detail}" if status else f"{url}: {detail}")
        self.status, self.detail = status, detail


def _png_b64(arr_hwc_uint8: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr_hwc_uint8, mode="RGB").save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _tensor_to_uint8(x) -> np.ndarray:
    """(3, H, W) float tensor/array in [0, 1] → (H, W, 3) uint8 (round to nearest)."""
    a = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"images: expected (3, H, W) float images in [0, 1], got shape {a.shape}")
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)


def encode_image(im) -> str:
    """One image (PIL, path, encoded bytes, or (3, H, W) float tensor/array in [0, 1]) → base64 string."""
    if isinstance(im, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(im)).decode("ascii")
    if isinstance(im, (str, Path)):
        return base64.b64encode(Path(im).read_bytes()).decode("ascii")
    if hasattr(im, "save") and hasattr(im, "mode"):  # PIL image
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        return _png_b64(np.asarray(rgb, dtype=np.uint8))
    return _png_b64(_tensor_to_uint8(im))


class RewardClient:
    """Client for a `zreward serve` server.

    Args:
        url: server base URL, e.g. "http://127.0.0.1:8000".  token: bearer token (None = no auth).
        timeout: seconds per HTTP attempt.  retries: extra attempts after the first on retryable failures.
        backoff: first retry delay in seconds (doubles each retry).  chunk_size: images per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, chunk_size: int = 64):
        self.url = url.rstrip("/")
        self.token, self.timeout, self.retries, self.backoff = token, timeout, retries, backoff
        self.chunk_size = max(1, chunk_size)
        self._info: dict | None = None

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        last: RewardServerError | None = None
        for attempt in range(self.retries + 1):
            delay = self.backoff * (2 ** attempt)
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                try:
                    detail = json.loads(e.read()).get("detail", "")
                except (ValueError, AttributeError, OSError):
                    detail = e.reason
                last = RewardServerError(e.code, str(detail), self.url + path)
                if e.code not in RETRY_STATUS:
                    raise last from None
                ra = e.headers.get("Retry-After") if e.headers else None
                if ra and ra.replace(".", "", 1).isdigit():
                    delay = max(delay, float(ra))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = RewardServerError(None, f"cannot reach the server ({reason})", self.url + path)
            if attempt < self.retries:
                time.sleep(delay)
        raise last

    def health(self) -> dict:
        return self._request("GET", "/health")

    def info(self, refresh: bool = False) -> dict:
        """The server's /info (model, levels, dims, reward weights, version, limits, stats)."""
        if self._info is None or refresh:
            self._info = self._request("GET", "/info")
        return self._info

    # ------------------------------------------------------------------ scoring
    def _image_list(self, images) -> list:
        if hasattr(images, "ndim") and not isinstance(images, (str, bytes)):
            if images.ndim != 4:
                raise ValueError(f"images: expected a (B, 3, H, W) tensor/array, got shape {tuple(images.shape)}")
            return [images[i] for i in range(images.shape[0])]
        return list(images)

    def score(self, prompts: list[str], images, dims: list[str] | None = None, reasoning: bool = False,
              samples: int = 1, server_paths: bool = False) -> dict:
        """Score B (prompt, image) pairs on the server.

        Args:
            prompts: B prompts.  images: see the module docstring.  dims: subset of the server's dims.
            reasoning / samples: reasoning mode (the server must allow it).
            server_paths: send `images` (paths) as server-side paths instead of their bytes.

        Returns:
            {"probs": (B, D, L), "mean": (B, D), "std": (B, D), "overall": (B,) float32 numpy arrays,
             "dims": list[str], "levels": (L,) array}.
        """
        prompts = list(prompts)
        ims = self._image_list(images)
        if len(ims) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(ims)} images")
        results, head = [], None
        for s in range(0, len(prompts), self.chunk_size):
            chunk = ims[s: s + self.chunk_size]
            body: dict = {"prompts": prompts[s: s + self.chunk_size]}
            if server_paths:
                body["paths"] = [str(p) for p in chunk]
            else:
                body["images"] = [encode_image(im) for im in chunk]
            if dims is not None:
                body["dims"] = list(dims)
            if reasoning:
                body.update(reasoning=True, samples=samples)
            head = self._request("POST", "/score", body)
            results += head["results"]
        if head is None:
            raise ValueError("prompts: expected at least one prompt, got an empty list")
        f32 = np.float32
        return {"probs": np.asarray([r["probs"] for r in results], dtype=f32),
                "mean": np.asarray([r["mean"] for r in results], dtype=f32),
                "std": np.asarray([r["std"] for r in results], dtype=f32),
                "overall": np.asarray([r["overall"] for r in results], dtype=f32),
                "dims": list(head["dims"]), "levels": np.asarray(head["levels"], dtype=f32)}

    def trl_reward_fn(self, name: str = "zreward", **opts):
        """`reward_fn` with options `opts` as a TRL `reward_funcs` entry (see `zreward.align.harness`)."""
        return as_trl_reward(lambda prompts, images: self.reward_fn(prompts, images, **opts), name)

    def flow_grpo_reward_fn(self, **opts):
        """`reward_fn` with options `opts` as a Flow-GRPO reward `fn(images, prompts, metadata) -> (scores, meta)`."""
        return as_flow_grpo_reward(lambda prompts, images: self.reward_fn(prompts, images, **opts))

    def reward_fn(self, prompts: list[str], images, dims: list[str] | None = None,
                  weights: list[float] | None = None, uncertainty_lambda: float = 0.0,
                  image_size: int | None = None):
        """Scalar rewards like `ScorerRewardFn.__call__`: (scores (B,), stds (B,)) float32 torch tensors.

        Args:
            dims / weights / uncertainty_lambda / image_size: as in `ScorerRewardFn` (weights default to the
                server scorer's `reward_weights` for the dims used; no resize by default).
        """
        # deferred: the client needs torch only for this helper (`score` works without it)
        import torch
        import torch.nn.functional as F

        from zreward.models.level_readout import overall, reward_from_readout  # imports torch: deferred too

        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3:  # (B, H, W, 3)
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / (255.0 if images.dtype == np.uint8 else 1.0)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"images: tensor of shape {tuple(images.shape)}, expected (B, 3, H, W) in [0, 1]")
            images = images.detach().float()
            if image_size and images.shape[-1] != image_size:
                images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
            images = images.clamp(0, 1)
        out = self.score(prompts, images, dims=dims)
        if weights is None:
            weights = dim_weights(out["dims"], self.info()["dims"], self.info()["reward_weights"])
        if len(weights) != len(out["dims"]):
            raise ValueError(f"weights: expected {len(out['dims'])} values (one per dim {out['dims']}), "
                             f"got {len(weights)}")
        w = torch.tensor(weights, dtype=torch.float32)
        mean, std = torch.from_numpy(out["mean"]), torch.from_numpy(out["std"])
        return reward_from_readout(mean, std, w, uncertainty_lambda).float(), overall(std, w).float()
