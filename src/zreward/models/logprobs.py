"""Output-head readout that never holds a vocabulary-sized tensor larger than one bounded chunk.

A VLM forward normally ends with `lm_head`: (N, T, H) hidden states → (N, T, V) logits. At V ≈ 248k (Qwen3.5) a
128-chain micro-batch of 300-token chains is ~80 GB of fp32 logits. Here the forward runs with the head skipped
(`final_hidden`: a forward pre-hook keeps the head's input and hands it an empty slice), and the head is applied
only where a quantity needs it:

- `token_logprobs`: log p(target | prefix) = logit[target] − logsumexp(logits) — the gather-then-logsumexp pattern
  of TRL's `selective_log_softmax` (no full log-softmax tensor); here the head itself also runs per chunk of at
  most `max_chunk_elems` logits, and each chunk is recomputed in backward (non-reentrant activation
  checkpointing), so neither pass holds more than one chunk of logits. TRL is only a test dependency, so the
  pattern is written out here, once.
- `level_logits`: the L level logits from the L rows of the head (peft trainable-token rows included) at the score
  positions only: an (N, L) product, no V-sized tensor.
- `log_normaliser`: logsumexp over the whole vocabulary at the score positions, in chunks and without gradient —
  it feeds only the in-level-mass diagnostic.

A head whose weight is not a plain local matrix (ZeRO-3 partitions, DTensors) is applied as a module per chunk.
An FSDP2-sharded head (an FSDP unit of its own, several processes) may all-gather in each call's forward and
reduce-scatter in each call's backward, so every rank must call it equally often: ranks with fewer rows (other
chain counts or lengths) add zero-weighted calls on one row up to the most chunks of any rank (one all-reduce;
without it training under FSDP hung, observed).
"""
from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule
from torch.utils.checkpoint import checkpoint

from zreward.models import level_readout

# Default bound on logits held at once: 2**25 fp32 values = 128 MiB (≈ 135 rows at V = 248k).
MAX_CHUNK_ELEMS = 2**25


def output_head(model) -> torch.nn.Module:
    """The output-embedding module (lm_head) of a HF model, also through DDP (`.module`) and peft wrappers."""
    m = getattr(model, "module", model)
    head = m.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(m).__name__}: the model has no output embeddings (lm_head) to read levels from")
    return head


def final_hidden(model, inputs: dict, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """One forward of `model` with its output head skipped; returns the head's input.

    Args:
        inputs: model kwargs (input_ids, attention_mask, pixel_values, ...).
        logits_to_keep: HF semantics: an int keeps the last k positions, a 1-D tensor keeps those positions.

    Returns:
        (N, K, H) final (normed) hidden states at the kept positions, with gradients when enabled.
    """
    head = output_head(model)
    got: list[torch.Tensor] = []

    def keep_input(_module, args, kwargs):
        got.append(args[0])
        return (args[0][..., :0, :],) + tuple(args[1:]), kwargs  # the head then computes an empty (N, 0, V)

    handle = head.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        model(**inputs, logits_to_keep=logits_to_keep, use_cache=False)
    finally:
        handle.remove()
    if len(got) != 1:
        raise RuntimeError(f"expected the output head to run once in the forward, it ran {len(got)} times")
    return got[0]


def _rows_per_chunk(vocab: int, max_chunk_elems: int) -> int:
    return max(1, max_chunk_elems // max(vocab, 1))


def _head_chunks(head, hidden: torch.Tensor, fn, extra: torch.Tensor | None, max_chunk_elems: int) -> torch.Tensor:
    """Concatenate fn(head(hidden[chunk]).float(), extra[chunk]) over row chunks; chunks recomputed in backward.

    hidden: (M, H).  Returns fn's outputs concatenated on dim 0.
    """
    vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
    step = _rows_per_chunk(vocab, max_chunk_elems)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))

    def one(h, e):
        return fn(head(h).float(), e)

    def call(h, e):
        return checkpoint(one, h, e, use_reentrant=False) if grad else one(h, e)

    starts = range(0, hidden.shape[0], step)
    outs = [call(hidden[s:s + step], None if extra is None else extra[s:s + step]) for s in starts]
    pads = [call(hidden[:1], None if extra is None else extra[:1])
            for _ in range(calls_on_every_rank(head, len(starts)) - len(starts))]
    out = torch.cat(outs) if outs else hidden.new_zeros(0, dtype=torch.float32)
    if pads:  # zero-weighted, so that their backward (and its collectives) runs too
        out = out + 0.0 * sum(p.sum() for p in pads)
    return out


def calls_on_every_rank(module, n: int) -> int:
    """How often to call `module` so that every rank calls it equally often: `n`, or with a module that is (or
    holds) an FSDP2 unit under several processes the largest `n` of any rank (collective: every rank with such a
    module calls it). The test is on the module, not on its parameters: FSDP2
    registers plain unsharded tensors while the unit is gathered, DTensors while it is sharded."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return n
    if not any(isinstance(m, FSDPModule) for m in module.modules()):
        return n
    t = torch.tensor([n], dtype=torch.long, device=next(module.parameters()).device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def token_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor,
                   max_chunk_elems: int = MAX_CHUNK_ELEMS) -> torch.Tensor:
    """log softmax(head(hidden))[target] per row, computed chunk by chunk.

    Args:
        head: the output head module.  hidden: (M, H) hidden states predicting the targets.  targets: (M,) ids.

    Returns:
        (M,) float32 log-probs (differentiable w.r.t. hidden and the head's trainable parameters).
    """
    def pick(z, t):
        return z.gather(-1, t.unsqueeze(-1)).squeeze(-1) - z.logsumexp(-1)

    return _head_chunks(head, hidden, pick, targets.to(hidden.device), max_chunk_elems)


@torch.no_grad()
def log_normaliser(head, hidden: torch.Tensor, max_chunk_elems: int = MAX_CHUNK_ELEMS) -> torch.Tensor:
    """(M,) float32 logsumexp of the full-vocabulary logits of (M, H) hidden states, in chunks, no gradient."""
    return _head_chunks(head, hidden, lambda z, _e: z.logsumexp(-1), None, max_chunk_elems)


def _tokens_layer(head):
    """The peft TrainableTokensLayer inside a wrapped head (duck-typed), or None."""
    return next((m for m in head.modules() if hasattr(m, "trainable_tokens_delta") and hasattr(m, "token_indices")),
                None)


def head_rows(head, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The head's weight rows (L, H) and bias (L,) | None for token ids, as the head's forward uses them.

    peft trainable-token rows (LoRA `trainable_token_indices`) replace the base rows while their adapter is active.
    Returns None when the weight is not a plain local matrix (ZeRO-3 partition, DTensor): use the module instead.
    """
    layer = _tokens_layer(head)
    base = layer.base_layer if layer is not None else head
    w = getattr(base, "weight", None)
    if (not isinstance(base, torch.nn.Linear) or w is None or w.dim() != 2 or hasattr(w, "ds_id")
            or type(w).__name__ == "DTensor"):
        return None
    idx = torch.as_tensor(ids, dtype=torch.long, device=w.device)
    rows = w.index_select(0, idx)
    bias = None if base.bias is None else base.bias.index_select(0, idx)
    if layer is None or layer.disable_adapters or layer.merged:
        return rows, bias
    replaced = {}
    for name in layer.active_adapters:
        if name in layer.token_indices:
            for k, tok in enumerate(layer.token_indices[name]):
                replaced[int(tok)] = layer.trainable_tokens_delta[name][k]
    if replaced:
        rows = torch.stack([replaced[t].to(rows) if t in replaced else rows[j] for j, t in enumerate(ids)])
    return rows, bias


def level_logits(head, hidden: torch.Tensor, ids: list[int], max_chunk_elems: int = MAX_CHUNK_ELEMS) -> torch.Tensor:
    """(..., L) logits of the level tokens from (..., H) hidden states: the L head rows only (see `head_rows`)."""
    got = head_rows(head, ids)
    if got is None:  # a sharded head: run the module on chunks and keep the level columns
        idx = torch.as_tensor(ids, dtype=torch.long, device=hidden.device)
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = _head_chunks(head, flat, lambda z, _e: z.index_select(-1, idx), None, max_chunk_elems)
        return out.view(*hidden.shape[:-1], len(ids)).to(hidden.dtype)
    rows, bias = got
    return torch.nn.functional.linear(hidden, rows.to(hidden.dtype), None if bias is None else bias.to(hidden.dtype))


def hidden_readout(head, hidden: torch.Tensor, ids: list[int], levels: torch.Tensor,
                   max_chunk_elems: int = MAX_CHUNK_ELEMS) -> level_readout.LevelReadout:
    """Level readout from (..., H) hidden states at score positions; in-level mass from the chunked normaliser."""
    lv = level_logits(head, hidden, ids, max_chunk_elems)
    out = level_readout.readout_from_level_logits(lv, levels.to(hidden.device))
    log_z = log_normaliser(head, hidden.reshape(-1, hidden.shape[-1]), max_chunk_elems).view(hidden.shape[:-1])
    out.in_level_mass = level_readout.in_level_mass(lv, log_z)
    return out


def hidden_at(model, inputs: dict, positions: torch.Tensor) -> torch.Tensor:
    """(N, H) final hidden states at one position per row (only the distinct positions leave the backbone)."""
    keep = torch.unique(positions)
    hidden = final_hidden(model, inputs, keep.to(inputs["input_ids"].device))
    col = torch.searchsorted(keep, positions).to(hidden.device)
    return hidden[torch.arange(len(positions), device=hidden.device), col]


def chain_scores(model, inputs: dict, lengths: torch.Tensor, prompt_lens: list[int], chain_ids: list[list[int]],
                 level_ids: list[int], levels: torch.Tensor, with_tokens: bool = True,
                 max_chunk_elems: int = MAX_CHUNK_ELEMS
                 ) -> tuple[torch.Tensor, torch.Tensor, level_readout.LevelReadout]:
    """Chain-token log-probs and the level readout after each chain, from one right-padded forward.

    Args:
        inputs: model kwargs for N rows of prompt + chain + close (right padding).  lengths: (N,) real tokens.
        prompt_lens: N prompt lengths (the chain starts there).  chain_ids: N chain token lists.
        with_tokens: False skips the token log-probs (only the score positions reach the head).

    Returns:
        token_logprobs (N, C) float32, 0 where masked (zeros (N, C) without tokens); token_mask (N, C) long;
        LevelReadout (N, L) at each row's last real token (the score position).
    """
    n, t = inputs["input_ids"].shape
    device = inputs["input_ids"].device
    p_len = torch.tensor(prompt_lens)
    c_len = torch.tensor([len(c) for c in chain_ids])
    c_max = max(int(c_len.max().item()) if n else 0, 1)
    j = torch.arange(c_max)
    mask = (j.unsqueeze(0) < c_len.unsqueeze(1)).to(device)
    head = output_head(model)
    if not with_tokens:
        h = hidden_at(model, inputs, (lengths - 1).to(device))
        return torch.zeros(n, c_max, device=h.device), mask.long().to(h.device), hidden_readout(
            head, h, level_ids, levels, max_chunk_elems)
    # Hidden states for positions [t - k, t): every chain token's predecessor and the score position.
    k = int(t - p_len.min().item() + 1)
    hidden = final_hidden(model, inputs, k)  # (N, k, H)
    rows = torch.arange(n, device=hidden.device)
    local = (p_len.unsqueeze(1) - 1 + j.unsqueeze(0) - (t - k)).clamp(0, k - 1).to(hidden.device)
    mask = mask.to(hidden.device)
    targets = torch.cat([torch.tensor(c, dtype=torch.long) for c in chain_ids] or [torch.zeros(0, dtype=torch.long)])
    picked = hidden[rows.unsqueeze(1).expand(-1, c_max)[mask], local[mask]]  # (M, H) real chain tokens only
    lp = token_logprobs(head, picked, targets.to(hidden.device), max_chunk_elems)
    logp = torch.zeros(n, c_max, device=hidden.device, dtype=lp.dtype).masked_scatter(mask, lp)
    score = hidden[rows, (lengths.to(hidden.device) - 1 - (t - k))]
    return logp, mask.long(), hidden_readout(head, score, level_ids, levels, max_chunk_elems)
