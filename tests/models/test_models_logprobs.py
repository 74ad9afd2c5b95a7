"""Vocabulary-lean scoring (`zreward.models.logprobs`): equal to the full-logits path it replaced, bounded memory.

`_full_logits_chain_forward` is the previous `Scorer.chain_forward` (full (N, k, V) logits, fp32 log-softmax),
kept here as the reference.
"""
from __future__ import annotations

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from zreward.models import DEFAULT_FAMILY
from zreward.models import level_readout as lr
from zreward.models import logprobs as lp
from zreward.models.batch import build_batch
from zreward.models.scorer import ChainBatch, load_scorer

PROMPTS = ["a red circle", "three green triangles above a purple hexagon"]
BIG_VOCAB = 151_680  # ≥ 150k, as Qwen's


def _x(n=2, seed=0):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _full_logits_chain_forward(s, chains, pixels):
    """The old path: logits at every chain position, (N, C, V) fp32 log-softmax, readout from full logits."""
    seqs = [p + c + s.close_ids for p, c in zip(chains.prompt_ids, chains.chain_ids)]
    batch = build_batch(seqs, chains.image_index, pixels, s.family, s.image_token_id, s.tokenizer.pad_token_id,
                        "right")
    batch.inputs["pixel_values"] = batch.inputs["pixel_values"].to(s.model_dtype)
    batch = batch.to(s.device)
    n, t = batch.inputs["input_ids"].shape
    p_len = torch.tensor([len(p) for p in chains.prompt_ids])
    c_len = torch.tensor([len(c) for c in chains.chain_ids])
    k = int(t - p_len.min().item() + 1)
    logits = s.model(**batch.inputs, logits_to_keep=k, use_cache=False).logits
    c_max = max(int(c_len.max().item()), 1)
    j = torch.arange(c_max)
    dev = logits.device
    local = (p_len.unsqueeze(1) - 1 + j.unsqueeze(0) - (t - k)).clamp(0, k - 1).to(dev)
    mask = (j.unsqueeze(0) < c_len.unsqueeze(1)).long().to(dev)
    tgt = torch.zeros(n, c_max, dtype=torch.long)
    for i, c in enumerate(chains.chain_ids):
        tgt[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    sel = logits[torch.arange(n, device=dev).unsqueeze(1), local].float()
    logp = sel.log_softmax(-1).gather(-1, tgt.to(dev).unsqueeze(-1)).squeeze(-1)
    full = logits[torch.arange(n, device=dev), batch.lengths - 1 - (t - k)]
    ro = lr.readout(full, s.level_token_ids.to(dev), s.levels.to(dev))
    return logp * mask, mask, ro.logits, ro.in_level_mass


@pytest.mark.parametrize("family", [DEFAULT_FAMILY, "qwen3_5"])
def test_chain_forward_equals_full_logits_path_values_and_gradients(tiny_dir, family):
    s = load_scorer(tiny_dir(family))
    s.model.train()
    x = _x(2, seed=3)
    torch.manual_seed(0)
    cb = s.generate_chains(PROMPTS, x, dims=["alignment", "realism"], samples=2, max_new_tokens=8)
    pixels = s.prepare_images(x)
    s.max_chunk_elems = 3 * s.model.config.get_text_config().vocab_size  # 3 rows per chunk: many chunks
    results = []
    for fn in (lambda: _full_logits_chain_forward(s, cb, pixels), lambda: _new_path(s, cb, pixels)):
        s.model.zero_grad(set_to_none=True)
        logp, mask, lv, mass = fn()
        (logp.sum() + (lv.float().log_softmax(-1)[:, -1]).sum()).backward()
        grads = {n: p.grad.clone() for n, p in s.model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), mask, lv.detach(), mass.detach(), grads))
    (a_lp, a_m, a_lv, a_mass, a_g), (b_lp, b_m, b_lv, b_mass, b_g) = results
    assert int(a_m.sum()) > 8 and torch.equal(a_m.cpu(), b_m.cpu())
    assert torch.allclose(a_lp, b_lp, atol=1e-5) and torch.allclose(a_lv, b_lv, atol=1e-5)
    assert torch.allclose(a_mass, b_mass, atol=1e-6)
    assert a_g.keys() == b_g.keys() and "lm_head.weight" in a_g
    for name in a_g:
        assert torch.allclose(a_g[name], b_g[name], atol=1e-5, rtol=1e-4), name
    # reasoning-mode scoring skips the token log-probs but reads the same levels
    with torch.no_grad():
        cf = s.chain_forward(cb, pixels, with_tokens=False)
    assert torch.allclose(cf.level_logits, a_lv, atol=1e-5) and not cf.token_logprobs.any()


def test_direct_readout_equals_full_logits_readout(tiny_scorer):
    s = tiny_scorer(DEFAULT_FAMILY)
    x = _x(2, seed=5)
    with torch.no_grad():
        ro = s.direct_readout(PROMPTS, x)
        texts = [s.direct_prompt(p, d) for p in PROMPTS for d in s.dims]
        batch, _ = s.encode_items(texts, [i for i in range(2) for _ in s.dims], s.prepare_images(x))
        logits = s.model(**batch.inputs, use_cache=False).logits[torch.arange(len(texts)), batch.last_pos]
        ref = lr.readout(logits.view(2, len(s.dims), -1), s.level_token_ids, s.levels)
        assert torch.allclose(s.logits_at(batch, batch.last_pos), logits, atol=1e-5)
    assert torch.allclose(ro.logits, ref.logits, atol=1e-5) and torch.allclose(ro.probs, ref.probs, atol=1e-6)
    assert torch.allclose(ro.in_level_mass, ref.in_level_mass, atol=1e-6)


def test_token_logprobs_edge_cases():
    head = torch.nn.Linear(4, 7, bias=True)
    h = torch.randn(5, 4, requires_grad=True)
    t = torch.tensor([0, 6, 3, 3, 1])
    ref = head(h).log_softmax(-1).gather(-1, t[:, None]).squeeze(-1)
    got = lp.token_logprobs(head, h, t, max_chunk_elems=7 * 2)  # 2 rows per chunk, last chunk of 1
    assert torch.allclose(got, ref, atol=1e-6)
    got.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert lp.token_logprobs(head, h[:0], t[:0]).shape == (0,)  # no chain tokens at all
    assert torch.allclose(lp.log_normaliser(head, h, 7), head(h).logsumexp(-1), atol=1e-6)


def _big_vocab_chains(s, n_chains: int, chain_len: int) -> tuple[ChainBatch, object]:
    """n_chains random chains of chain_len tokens over 2 images (ids from the tokenizer's ordinary range)."""
    x = _x(2, seed=1)
    pixels = s.prepare_images(x)
    image_index = [i % 2 for i in range(n_chains)]
    texts = [s.reasoning_prompt(PROMPTS[i], "alignment") for i in image_index]
    _, prompt_ids = s.encode_items(texts, image_index, pixels)
    g = torch.Generator().manual_seed(0)
    chains = torch.randint(100, len(s.tokenizer) - 20, (n_chains, chain_len), generator=g).tolist()
    return ChainBatch(image_index, [0] * n_chains, prompt_ids, chains, [""] * n_chains), pixels


class _PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of the CPU tensor storages allocated while active and still alive (forward and backward ops).

    Outputs that share an input's storage (views, in-place ops) are not new allocations; pre-existing tensors
    (weights) are never counted.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.total = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        new = {}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                if st._cdata not in seen and st._cdata not in self.live:
                    new[st._cdata] = (StorageWeakRef(st), st.nbytes())
        if new:
            dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
            self.total -= sum(self.live.pop(k)[1] for k in dead)
            self.live.update(new)
            self.total += sum(n for _, n in new.values())
            self.peak = max(self.peak, self.total)
        return out


def _peak_bytes(fn) -> int:
    """Peak live bytes of the CPU tensors that fn allocates (weights and other pre-existing tensors excluded)."""
    with _PeakTensorBytes() as m:
        fn()
    return m.peak


@pytest.fixture(scope="module")
def big_vocab_scorer(tmp_path_factory):
    from zreward.models.tiny import init_tiny

    d = init_tiny(DEFAULT_FAMILY, tmp_path_factory.mktemp("big_vocab"), preset="tiny", vocab_size=BIG_VOCAB)
    s = load_scorer(d)
    s.model.train()
    # As under LoRA, the (V, H) embedding and head stay frozen: their gradients would be the same in both paths.
    s.model.get_input_embeddings().weight.requires_grad_(False)
    s.model.get_output_embeddings().weight.requires_grad_(False)
    return s


def _fwd_bwd(s, cb, pixels, path):
    out = path(s, cb, pixels)
    (out[0].sum() + out[2].float().logsumexp(-1).sum()).backward()
    s.model.zero_grad(set_to_none=True)


def _new_path(s, cb, pixels):
    return tuple(vars(s.chain_forward(cb, pixels)).values())


def test_big_vocab_chain_scoring_memory_bound_and_equal_outputs(big_vocab_scorer):
    """Goal: 64 chains × 64 tokens at V ≥ 150k: chain scoring peaks ≥ 10× below the old path, outputs equal.

    The old path's forward alone materialises (N, k, V) fp32 logits (then a gathered copy and a log-softmax of the
    same size), so that one tensor bounds its peak from below at 64 chains (a forward of the new path is measured
    against it: ~80 GFLOP of head matmul, seconds). Forward + backward of both paths are measured on 8 chains;
    the slow test below measures both at 64 chains (the old path peaks at ~8 GB there).
    """
    s = big_vocab_scorer
    s.max_chunk_elems = 2**22
    cb, pixels = _big_vocab_chains(s, 64, 64)
    with torch.no_grad():
        new_peak = _peak_bytes(lambda: _new_path(s, cb, pixels))
    k = 64 + len(s.close_ids) + 1  # positions kept by the old path (prompts of equal length)
    old_logits_bytes = 64 * k * BIG_VOCAB * 4
    assert new_peak * 10 <= old_logits_bytes, (new_peak, old_logits_bytes)
    small = ChainBatch(*(getattr(cb, f)[:8] for f in ("image_index", "dim_index", "prompt_ids", "chain_ids", "texts")))
    old_peak = _peak_bytes(lambda: _fwd_bwd(s, small, pixels, _full_logits_chain_forward))
    small_peak = _peak_bytes(lambda: _fwd_bwd(s, small, pixels, _new_path))
    assert small_peak * 10 <= old_peak, (small_peak, old_peak)
    with torch.no_grad():
        a, b = _full_logits_chain_forward(s, small, pixels), _new_path(s, small, pixels)
    for u, v in zip(a, b):
        assert torch.allclose(u.float(), v.float(), atol=1e-5)


@pytest.mark.slow
def test_big_vocab_old_path_measured_at_64_chains(big_vocab_scorer):
    s = big_vocab_scorer
    s.max_chunk_elems = 2**22
    cb, pixels = _big_vocab_chains(s, 64, 64)
    old_peak = _peak_bytes(lambda: _fwd_bwd(s, cb, pixels, _full_logits_chain_forward))
    new_peak = _peak_bytes(lambda: _fwd_bwd(s, cb, pixels, _new_path))
    print(f"64 chains x 64 tokens, V={BIG_VOCAB}: old {old_peak / 2**20:.0f} MiB, new {new_peak / 2**20:.0f} MiB")
    assert new_peak * 10 <= old_peak


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", [DEFAULT_FAMILY, "qwen3_5"])
def test_cuda_bf16_chain_forward_matches_full_logits_path(tiny_dir, family):
    s = load_scorer(tiny_dir(family), device="cuda", dtype="bf16")
    x = _x(2, seed=3).cuda()
    torch.manual_seed(0)
    cb = s.generate_chains(PROMPTS, x, dims=["alignment"], samples=2, max_new_tokens=8)
    pixels = s.prepare_images(x)
    with torch.no_grad():
        ref = _full_logits_chain_forward(s, cb, pixels)
        new = s.chain_forward(cb, pixels)
    assert torch.allclose(ref[0], new.token_logprobs, atol=5e-2)  # bf16 logits, fp32 log-softmax in both
    assert torch.allclose(ref[2].float(), new.level_logits.float(), atol=5e-2)
