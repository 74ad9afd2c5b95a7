"""Session-scoped tiny models for the score-layer tests: built from config into tmp dirs once, loaded once."""
from __future__ import annotations

import pytest



@pytest.fixture(scope="session")
def tiny_dir(tiny_factory):
    """tiny_dir(family) -> Path of a saved tiny scorer directory (seed 0; short chains keep reasoning tests fast)."""
    return lambda family: tiny_factory(family, max_new_tokens=12)


@pytest.fixture(scope="session")
def tiny_scorer(tiny_dir):
    """tiny_scorer(family) -> a loaded Scorer (shared: tests must not modify it)."""
    import zreward

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = zreward.load_scorer(tiny_dir(family))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def photos():
    """Real photos from skimage.data as (3, H, W) float tensors in [0, 1], plus the PIL images."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    pil = [Image.fromarray(np.asarray(getattr(data, n)())).convert("RGB") for n in ("astronaut", "chelsea", "coffee")]
    tens = [torch.from_numpy(np.asarray(p, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous() for p in pil]
    return pil, tens


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the spinning second thread
    doubles CPU time; restored after each test so other test directories keep their setting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
