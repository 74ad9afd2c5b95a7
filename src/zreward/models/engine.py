"""Rollout engines: what samples the reasoning chains of `Scorer.generate_chains` (GDSO/GRPO rollouts, reasoning-mode
evaluation, the RISD teacher).

An engine gets the prepared prompt batch (`PromptBatch`: prompt token ids with the image tokens expanded, the
left-padded HF batch and the preprocessed images) and the sampling settings (`Sampling`), and returns the generated
token ids and, where it has them, the per-token log-probs it sampled with (`Generation`). Cutting at EOS, decoding
and the teacher-forced scoring stay in the Scorer, the same for every engine.

- `hf` (`HFEngine`, the default and the CPU path): transformers' `generate` on the Scorer's own module, exactly the
  call the Scorer made before engines existed (same seed → same chains). It returns no log-probs and no importance
  correction is applied: it samples with the trainer's own module, and the measured mismatch is negligible
  (tests/models/test_models_engine.py): float32 numerics (< 1e-4; KV cache vs one forward, left vs right padding),
  plus, because the vision tokens are suppressed during sampling, a trainer log-prob lower by −log(1 − their
  mass) — 0.005 on a random tiny model, ~0 for a trained VLM, which puts no mass on them in text.
- `vllm` (`VLLMEngine`, optional extra `pip install 'zreward[vllm]'`, GPU only, not
  tested on these machines): a colocated vLLM engine. Its sampling log-probs differ from the trainer's (other
  kernels, bf16 accumulation order, its own image preprocessing); the RL trainers correct for that with truncated
  importance sampling (`zreward.losses.policy.truncated_is_weights`).
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.distributed.tensor import DTensor

from zreward.models import vision_share as vs
from zreward.models.batch import EncodedBatch
from zreward.models.preprocess import PixelInputs, tensor_to_pil

__all__ = ["ENGINES", "VLLM_EXTRA", "Sampling", "PromptBatch", "Generation", "RolloutEngine", "HFEngine", "VLLMEngine",
           "check_engine", "make_engine", "vllm_weights"]

ENGINES = ("hf", "vllm")
VLLM_EXTRA = "pip install 'zreward[vllm]'"


@dataclass
class Sampling:
    """How to continue the prompts.

    Attributes:
        max_new_tokens: chain length bound.  do_sample: False → greedy.  temperature: used when sampling (plain
        temperature sampling, no top-k/top-p: RL needs the model's own distribution).
        eos_ids: tokens that end a chain.  pad_id: padding token.  suppress_ids: tokens never generated (vision
        tokens: the model would expect pixels for them).
    """

    max_new_tokens: int
    do_sample: bool
    temperature: float
    eos_ids: list[int]
    pad_id: int | None
    suppress_ids: list[int]


@dataclass
class PromptBatch:
    """N prompts to continue, ordered (image, dim, sample).

    Attributes:
        prompt_ids: N token lists (image tokens expanded), each ending where a chain starts.
        batch: the same, left-padded, with pixel inputs, on the model's device (what HF `generate` takes).
        image_index: (N,) entry of `pixels` each prompt shows.
        pixels: the preprocessed images (`pixels.source`: the [0, 1] images they came from, for engines that
            preprocess images themselves).
    """

    prompt_ids: list[list[int]]
    batch: EncodedBatch
    image_index: list[int]
    pixels: PixelInputs


@dataclass
class Generation:
    """Engine output for N prompts.

    Attributes:
        token_ids: N generated token lists (not yet cut at EOS; HF pads finished rows).
        logprobs: N lists, log-prob of each generated token under the distribution the engine sampled from
            (temperature applied), or None when the engine's log-probs are the trainer's own (`hf`).
    """

    token_ids: list[list[int]]
    logprobs: list[list[float]] | None = None


class RolloutEngine(Protocol):
    """What the Scorer and the RL loop need from an engine."""

    name: str

    def generate(self, model, prompts: PromptBatch, sampling: Sampling) -> Generation:
        """Continue every prompt once (no gradients)."""
        ...

    def sync_weights(self, model) -> None:
        """Make the engine sample from `model`'s current weights (called after each optimizer step)."""
        ...

    def release(self) -> None:
        """The rollouts of a step are done: free accelerator memory for the update (sleep mode), or nothing."""
        ...


class HFEngine:
    """transformers `generate` on the training module itself (batched, KV-cached, left padding)."""

    name = "hf"

    def generate(self, model, prompts: PromptBatch, sampling: Sampling) -> Generation:
        kw = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample, pad_token_id=sampling.pad_id,
                  eos_token_id=list(sampling.eos_ids), suppress_tokens=list(sampling.suppress_ids))
        if sampling.do_sample:
            kw.update(temperature=sampling.temperature, top_k=0, top_p=1.0)
        inputs = prompts.batch.inputs
        with torch.no_grad(), vs.encode_each_image_once(model, prompts.image_index, prompts.pixels):
            out = model.generate(**inputs, **kw)
        return Generation(out[:, inputs["input_ids"].shape[1]:].tolist())

    def sync_weights(self, model) -> None:
        """Nothing to do: it generates with the training module."""

    def release(self) -> None:
        """Nothing to free."""


class VLLMEngine:
    """A colocated vLLM engine (vLLM's offline `LLM` inside the training process) — **untested here**: it needs a
    CUDA machine and the `vllm` extra; the unit tests drive it with a fake LLM (request building, log-prob
    extraction, weight-sync calls). Written against vLLM's offline API (`LLM.generate` with `prompt_token_ids` +
    `multi_modal_data`, `SamplingParams`, `sleep` / `wake_up`, `reset_prefix_cache`) following TRL 1.16's colocate
    mode (`trl.generation.vllm_generation.VLLMGeneration`).

    - **prefix caching** (`enable_prefix_caching=True`): the N = B·D·G prompts repeat each (image, dim) prompt G
      times and the D dims of an image share their prefix up to the end of the image tokens (the image comes first
      in the user turn), so that KV is computed once per image.
    - **sleep mode** (`sleep=True`, for training): the RL loop calls `release()` once a step's rollouts are done and
      the engine sleeps at level 2 (weights and KV cache freed), so the update has the GPU; level 2 discards the
      weights, so the next `generate` wakes it and first pushes the trainer's current weights (the model is passed
      to it) — TRL's sequence, except that TRL sleeps after every generate call (here a rollout cut into
      `generation_batch` chunks, and the evaluation, wake it once).
    - **weights**: `sync_weights(model)` after each update pushes the weights when the engine is awake
      (`vllm_weights`: LoRA merged for the push then unmerged, adapter tensors skipped; FSDP2 shards gathered with
      `full_tensor`, a collective), then resets the prefix cache; asleep, the wake-up pushes them.
    - **images**: vLLM preprocesses a PIL image itself with the checkpoint's image processor (from
      `pixels.source`); the prompt ids carry the image tokens already expanded, as TRL passes them.
    - **log-probs**: `logprobs=0` returns the sampled token's log-prob; `logprobs_mode="processed_logprobs"` (set
      at start) makes it the temperature-scaled distribution's, the one the token was drawn from (TRL does the same).
      Suppressed tokens get a logit bias of −100 (vLLM has no `suppress_tokens`).
    """

    name = "vllm"

    def __init__(self, llm, sampling_params_cls, sleep: bool = False):
        self.llm, self.sampling_params_cls, self.sleep = llm, sampling_params_cls, sleep
        self.asleep = sleep  # level-2 sleep: weights and KV cache freed (`start` puts a sleep-mode engine to sleep)

    @classmethod
    def start(cls, model_dir, *, sleep: bool = False, gpu_memory_utilization: float = 0.3,
              max_model_len: int | None = None, seed: int = 0, dtype: str = "auto") -> VLLMEngine:
        """Start `vllm.LLM` on a saved Scorer directory (it must hold the same vocabulary as the trained model)."""
        from vllm import LLM, SamplingParams  # deferred: vllm is the optional GPU extra zreward[vllm]

        # In-process engine, one per training process (TRL's colocate set-up): the external launcher reads the
        # torchrun variables (set here for a plain one-process run) and keeps the model in this process, where
        # `_push` reaches it.
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
        for k, v in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world), ("MASTER_ADDR", "localhost")):
            os.environ.setdefault(k, str(v))  # torchrun's own values are kept
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("localhost", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        llm = LLM(model=str(model_dir), enable_prefix_caching=True, enable_sleep_mode=sleep,
                  gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed, dtype=dtype,
                  logprobs_mode="processed_logprobs", limit_mm_per_prompt={"image": 1},
                  distributed_executor_backend="external_launcher")
        if sleep:
            llm.sleep(level=2)
        return cls(llm, SamplingParams, sleep)

    def sampling_params(self, sampling: Sampling):
        """vLLM SamplingParams for `sampling` (temperature 0 = greedy)."""
        return self.sampling_params_cls(
            n=1, temperature=sampling.temperature if sampling.do_sample else 0.0, top_p=1.0, top_k=0,
            max_tokens=sampling.max_new_tokens, logprobs=0, stop_token_ids=list(sampling.eos_ids),
            logit_bias={int(t): -100.0 for t in sampling.suppress_ids} or None, detokenize=False)

    @staticmethod
    def requests(prompts: PromptBatch) -> list[dict]:
        """One request per prompt: its token ids and its image as PIL (each distinct image converted once)."""
        src = prompts.pixels.source
        if src is None:
            raise ValueError("the vllm engine needs the images the pixels came from (PixelInputs.source); build "
                             "them with Scorer.prepare_images")
        pil: dict[int, object] = {}
        out = []
        for ids, j in zip(prompts.prompt_ids, prompts.image_index):
            if j not in pil:
                pil[j] = tensor_to_pil(src[j])
            out.append({"prompt_token_ids": list(ids), "multi_modal_data": {"image": pil[j]}})
        return out

    def generate(self, model, prompts: PromptBatch, sampling: Sampling) -> Generation:
        if self.asleep:  # weights first (they are pushed into woken memory), then the KV cache
            self.llm.wake_up(tags=["weights"])
            self._push(model)
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        outs = self.llm.generate(self.requests(prompts), sampling_params=self.sampling_params(sampling),
                                 use_tqdm=False)
        ids, lps = [], []
        for o in outs:
            c = o.outputs[0]
            toks = list(c.token_ids)
            ids.append(toks)
            # one {token id: Logprob} per generated token; a missing entry → NaN (weight 1 in the correction)
            lps.append([float(d[t].logprob) if d is not None and t in d else float("nan")
                        for t, d in zip(toks, c.logprobs or [None] * len(toks))])
        return Generation(ids, lps)

    def sync_weights(self, model) -> None:
        if not self.asleep:  # asleep, the weights are pushed when `generate` wakes the engine
            self._push(model)

    def release(self) -> None:
        """Sleep (level 2) until the next `generate`, in sleep mode; otherwise nothing."""
        if self.sleep and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def _push(self, model) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner  # TRL's colocate path
        for name, t in vllm_weights(model):
            runner.model.load_weights([(name, t)])
        self.llm.reset_prefix_cache()


def vllm_weights(model):
    """(name, tensor) one at a time under the names vLLM loads (TRL's `_iter_named_params`): a DDP wrapper and
    activation-checkpoint prefixes removed; a peft model's adapters merged for the walk (and unmerged after), its
    adapter tensors, trainable-token deltas and `original_module` copies skipped; FSDP2 DTensor shards gathered
    (`full_tensor`). Untested with FSDP2 + LoRA (TRL leaves the same open)."""
    m = getattr(model, "module", model)
    peft = hasattr(m, "peft_config")
    if peft:
        m.merge_adapter()
    try:
        for name, p in m.named_parameters():
            if peft:
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                if m.prefix in name or "original_module" in name or "trainable_tokens_delta" in name:
                    continue
                # peft's trainable level-token rows (`trainable_token_indices`) are merged into the wrapped weight
                name = name.replace("modules_to_save.default.", "").replace(".token_adapter", "")
            name = name.replace("_checkpoint_wrapped_module.", "")
            t = p.detach()
            yield name, t.full_tensor() if isinstance(t, DTensor) else t
    finally:
        if peft:
            m.unmerge_adapter()


def check_engine(name: str, where: str) -> None:
    """Raise ValueError naming `where` for an unknown engine, or for `vllm` when vLLM is not importable."""
    if name not in ENGINES:
        raise ValueError(f"{where} must be one of {ENGINES}, got {name!r}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError(f"{where}=vllm needs vLLM (a CUDA machine): install the extra with {VLLM_EXTRA}, "
                         f"or use {where}=hf")


def make_engine(name: str, where: str, model_dir=None, **vllm_options) -> RolloutEngine:
    """The engine called `name` (checked, see `check_engine`); `vllm` starts a colocated LLM on `model_dir`.

    Args:
        where: the setting that chose it (for messages), e.g. "gdso.engine" or "--engine".
        model_dir: a saved Scorer directory vLLM loads (vllm only).
        **vllm_options: `VLLMEngine` keyword arguments (vllm only).
    """
    check_engine(name, where)
    if name == "hf":
        return HFEngine()
    if model_dir is None:
        raise ValueError(f"{where}=vllm: no model directory for vLLM to load")
    return VLLMEngine.start(model_dir, **vllm_options)
