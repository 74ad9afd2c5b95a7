"""Rollout engines: hf = the Scorer's previous `generate` call exactly; the vllm adapter driven by a fake LLM (vLLM
is not installed here: what is tested is request building, log-prob extraction and the weight-sync calls)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zreward.models import engine as E
from zreward.models import vision_share as vs
from zreward.models.scorer import load_scorer

PROMPTS = ["a red circle", "two blue stars"]
DIMS = ["alignment", "realism"]


@pytest.fixture(scope="module")
def sc(tiny_model):
    return load_scorer(tiny_model)


def _images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _encoded(sc, pixels):
    """(items, batch, prompt ids) of the 2 prompts × 2 dims × 3 samples reasoning prompts, left-padded as the
    Scorer encodes them for generation."""
    items = [(b, d) for b in range(2) for d in range(2) for _ in range(3)]
    batch, prompt_ids = sc.encode_items([sc.reasoning_prompt(PROMPTS[b], DIMS[d]) for b, d in items],
                                        [b for b, _ in items], pixels, padding_side="left")
    return items, batch, prompt_ids


def test_hf_engine_equals_the_previous_generate_call(sc):
    """Same seed → the chains of the `generate` call the Scorer made before engines (reproduced here verbatim)."""
    assert isinstance(sc.engine, E.HFEngine)
    pixels = sc.prepare_images(_images())
    torch.manual_seed(5)
    cb = sc.generate_chains(PROMPTS, pixels, DIMS, samples=3, temperature=1.0, max_new_tokens=6)
    items, batch, prompt_ids = _encoded(sc, pixels)
    torch.manual_seed(5)
    with torch.no_grad(), vs.encode_each_image_once(sc.model, [b for b, _ in items], pixels):
        out = sc.model.generate(**batch.inputs, max_new_tokens=6, do_sample=True,
                                pad_token_id=sc.tokenizer.pad_token_id, eos_token_id=sorted(sc.eos_ids),
                                suppress_tokens=sc.suppress_ids, temperature=1.0, top_k=0, top_p=1.0)
    want = [r[:next((k for k, t in enumerate(r) if t in sc.eos_ids), len(r))]
            for r in out[:, batch.inputs["input_ids"].shape[1]:].tolist()]
    assert cb.prompt_ids == prompt_ids and cb.chain_ids == want
    assert sum(map(len, want)) > 0 and cb.sampling_logprobs is None  # hf: the trainer's log-probs are the engine's


def test_reasoning_scores_do_not_depend_on_the_engine_object(sc):
    """score(reasoning=True) with a fresh HFEngine equals the default one under the same seed (and a recording
    engine sees the call the Scorer makes)."""
    torch.manual_seed(3)
    a = sc.score(PROMPTS, _images(), reasoning=True, samples=2)
    calls = []

    class Recording(E.HFEngine):
        def generate(self, model, prompts, sampling):
            calls.append((len(prompts.prompt_ids), sampling))
            return super().generate(model, prompts, sampling)

    sc.engine = Recording()
    try:
        torch.manual_seed(3)
        b = sc.score(PROMPTS, _images(), reasoning=True, samples=2)
    finally:
        sc.engine = E.HFEngine()
    assert torch.equal(a.probs, b.probs) and a.chains == b.chains
    assert len(calls) == 1 and calls[0][0] == 2 * 4 * 2 and calls[0][1].do_sample


@pytest.mark.parametrize("suppress", [False, True])
def test_hf_sampling_logprobs_match_the_trainers(sc, suppress):
    """The measured hf engine/trainer mismatch (why the hf engine needs no correction): the log-probs `generate`
    sampled with (its processed scores, T = 1) against the teacher-forced `chain_forward` log-probs of the same
    tokens. Without suppressed tokens: float32 numerics only (KV cache vs one forward, left vs right padding). With
    the vision tokens suppressed (as the Scorer does) the sampling distribution lacks their mass m, so the trainer's
    log-prob is lower by −log(1 − m) ≈ 0.005 on this random tiny model (a trained VLM gives them ~0 mass)."""
    from zreward.models.scorer import ChainBatch
    from zreward.trainers.rollout import engine_logprobs

    pixels = sc.prepare_images(_images())
    items, batch, prompt_ids = _encoded(sc, pixels)
    torch.manual_seed(0)
    with torch.no_grad(), vs.encode_each_image_once(sc.model, [b for b, _ in items], pixels):
        out = sc.model.generate(**batch.inputs, max_new_tokens=8, do_sample=True,
                                pad_token_id=sc.tokenizer.pad_token_id, eos_token_id=sorted(sc.eos_ids),
                                suppress_tokens=sc.suppress_ids if suppress else [], temperature=1.0, top_k=0,
                                top_p=1.0, output_scores=True, return_dict_in_generate=True)
    rows = out.sequences[:, batch.inputs["input_ids"].shape[1]:].tolist()
    chains = [r[:next((k for k, t in enumerate(r) if t in sc.eos_ids), len(r))] for r in rows]
    sampled = [[torch.log_softmax(out.scores[k][i].float(), -1)[t].item() for k, t in enumerate(c)]
               for i, c in enumerate(chains)]
    cb = ChainBatch([b for b, _ in items], [d for _, d in items], prompt_ids, chains, [""] * len(chains), sampled)
    with torch.no_grad():
        cf = sc.chain_forward(cb, pixels)
    m = cf.token_mask.bool()
    diff = (cf.token_logprobs - engine_logprobs(cb, tuple(m.shape)))[m]  # trainer − engine
    assert diff.numel() > 20
    if not suppress:
        assert diff.abs().max() < 1e-4
    else:
        assert sc.suppress_ids and diff.max() < 1e-5 and 1e-4 < -diff.mean() < 0.02


# ------------------------------------------------------------------------------------------------ vllm, faked
class FakeLLM:
    """Records what VLLMEngine asks of vllm.LLM; generates a fixed chain per request (EOS after 3 tokens)."""

    def __init__(self, eos: int):
        self.eos, self.events, self.requests, self.loaded = eos, [], None, []
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=lambda pairs: self.loaded.extend(pairs)))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=runner)))

    def generate(self, requests, sampling_params=None, use_tqdm=True):
        self.events.append("generate")
        self.requests, self.params = requests, sampling_params
        outs = []
        for i, _ in enumerate(requests):
            toks = [10 + i, 11, 12, self.eos, 13]
            lps = [{t: SimpleNamespace(logprob=-0.1 * (k + 1))} for k, t in enumerate(toks)]
            lps[1] = None  # a token without a log-prob → NaN
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=toks, logprobs=lps)]))
        return outs

    def sleep(self, level):
        self.events.append(f"sleep{level}")

    def wake_up(self, tags):
        self.events.append("wake_" + "+".join(tags))

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")


def test_vllm_requests_sampling_and_logprobs(sc):
    eos = min(sc.eos_ids)
    llm = FakeLLM(eos)
    sc.engine = E.VLLMEngine(llm, dict)  # SamplingParams replaced by dict: the kwargs are checked
    try:
        imgs = _images()
        cb = sc.generate_chains(PROMPTS, imgs, DIMS, samples=2, temperature=0.7, max_new_tokens=5)
    finally:
        sc.engine = E.HFEngine()
    reqs = llm.requests
    assert len(reqs) == 8 and [r["prompt_token_ids"] for r in reqs] == cb.prompt_ids
    pil = [r["multi_modal_data"]["image"] for r in reqs]
    assert pil[0] is pil[3] and pil[4] is pil[7] and pil[0] is not pil[4]  # each image converted once, reused
    back = torch.from_numpy(np.array(pil[4])).permute(2, 0, 1).float() / 255
    assert (back - imgs[1]).abs().max() <= 0.5 / 255 + 1e-6  # the second image, uint8-rounded
    p = llm.params
    assert p["temperature"] == 0.7 and p["top_p"] == 1.0 and p["top_k"] == 0 and p["max_tokens"] == 5
    assert p["logprobs"] == 0 and p["stop_token_ids"] == sorted(sc.eos_ids) and p["n"] == 1
    assert p["logit_bias"] == {t: -100.0 for t in sc.suppress_ids} or (not sc.suppress_ids and p["logit_bias"] is None)
    assert cb.chain_ids[5] == [15, 11, 12]  # cut before EOS
    lp = cb.sampling_logprobs[5]
    assert len(lp) == 3 and lp[0] == pytest.approx(-0.1) and math.isnan(lp[1]) and lp[2] == pytest.approx(-0.3)
    greedy = E.VLLMEngine(FakeLLM(eos), dict).sampling_params(E.Sampling(4, False, 0.7, [eos], 0, []))
    assert greedy["temperature"] == 0.0 and greedy["logit_bias"] is None


def test_vllm_requests_need_the_source_images(sc):
    pixels = sc.prepare_images(_images())
    pixels.source = None
    with pytest.raises(ValueError, match="PixelInputs.source"):
        E.VLLMEngine.requests(E.PromptBatch([[1]], None, [0], pixels))


def test_vllm_weight_sync_without_sleep(sc):
    llm = FakeLLM(0)
    eng = E.VLLMEngine(llm, dict, sleep=False)
    eng.sync_weights(sc.model)
    names = [n for n, _ in llm.loaded]
    assert names == [n for n, _ in sc.model.named_parameters()]
    assert all(t.data_ptr() == p.data_ptr() for (_, t), (_, p) in zip(llm.loaded, sc.model.named_parameters()))
    assert llm.events == ["reset_prefix_cache"] and not eng.asleep
    eng.release()  # no sleep mode: nothing to free
    assert llm.events == ["reset_prefix_cache"]


def test_vllm_sleep_mode_wakes_with_the_trainers_weights(sc):
    """Level-2 sleep discards the weights: the first generate after a sleep wakes the weights, pushes the trainer's,
    wakes the KV cache and generates; further generate calls (rollout chunks) reuse the awake engine; `release`
    sleeps; a sync while asleep pushes nothing (the next wake-up does), a sync while awake pushes at once."""
    llm = FakeLLM(min(sc.eos_ids))
    eng = E.VLLMEngine(llm, dict, sleep=True)
    sc.engine = eng

    def gen():
        sc.generate_chains(PROMPTS[:1], _images()[:1], DIMS[:1], samples=1, max_new_tokens=3)

    try:
        gen()
        n = len(llm.loaded)
        assert n > 0 and llm.events == ["wake_weights", "reset_prefix_cache", "wake_kv_cache", "generate"]
        gen()
        assert llm.events[4:] == ["generate"] and len(llm.loaded) == n
        eng.release()
        eng.sync_weights(sc.model)  # asleep: nothing pushed
        assert llm.events[5:] == ["sleep2"] and len(llm.loaded) == n and eng.asleep
        gen()
        assert llm.events[6:] == llm.events[:4] and len(llm.loaded) == 2 * n
        eng.sync_weights(sc.model)  # awake: pushed at once
        assert len(llm.loaded) == 3 * n and llm.events[-1] == "reset_prefix_cache"
    finally:
        sc.engine = E.HFEngine()


def test_vllm_weights_of_a_lora_model_are_merged_base_names(tiny_model):
    """LoRA (+ trainable level-token rows): the pushed tensors are the merged model's, under the plain model's names,
    and the adapters are unmerged afterwards."""
    import copy

    from zreward.models.lora import LoraOptions

    m = load_scorer(tiny_model, lora=LoraOptions(r=2, alpha=4)).model
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n or "trainable_tokens_delta" in n:
                p.fill_(0.05)  # a non-zero update, so merging changes the base weights
    merged = dict(copy.deepcopy(m).merge_and_unload().named_parameters())
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    got = {n: t.clone() for n, t in E.vllm_weights(m)}  # each tensor is valid while it is yielded (then unmerged)
    plain = dict(load_scorer(tiny_model).model.named_parameters())  # the same weights without adapters
    assert sorted(got) == sorted(plain) == sorted(merged)
    assert all(torch.allclose(got[n], merged[n], atol=1e-6) for n in got)
    changed = [n for n in got if not torch.equal(got[n], plain[n])]
    assert any("q_proj" in n for n in changed) and "lm_head.weight" in changed  # LoRA and level rows merged in
    assert all(torch.allclose(p.detach(), before[n], atol=1e-6) for n, p in m.named_parameters())  # unmerged


def test_engine_choice_is_checked():
    with pytest.raises(ValueError, match=r"gdso.engine must be one of \('hf', 'vllm'\)"):
        E.check_engine("sglang", "gdso.engine")
    with pytest.raises(ValueError, match=r"teacher.engine=vllm needs vLLM.*pip install 'zreward\[vllm\]'"):
        E.make_engine("vllm", "teacher.engine", model_dir="x")
    assert isinstance(E.make_engine("hf", "--engine"), E.HFEngine)


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` module (importable, records LLM(...) kwargs); torchrun variables restored afterwards."""
    import importlib.machinery
    import sys
    import types

    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    made = []

    class LLM(FakeLLM):
        def __init__(self, **kw):
            super().__init__(eos=0)
            self.kw = kw
            made.append(self)

    mod.LLM, mod.SamplingParams = LLM, dict
    monkeypatch.setitem(sys.modules, "vllm", mod)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so that teardown restores (or removes) what the engine sets
        monkeypatch.delenv(k)
    return made


def test_vllm_start_settings(fake_vllm, tmp_path):
    eng = E.make_engine("vllm", "gdso.engine", model_dir=tmp_path, sleep=True, seed=3)
    (llm,) = fake_vllm
    kw = llm.kw
    assert kw["model"] == str(tmp_path) and kw["enable_prefix_caching"] is True and kw["enable_sleep_mode"] is True
    assert kw["logprobs_mode"] == "processed_logprobs" and kw["distributed_executor_backend"] == "external_launcher"
    assert kw["seed"] == 3 and llm.events == ["sleep2"] and eng.asleep and eng.sampling_params_cls is dict
    import os

    assert os.environ["WORLD_SIZE"] == "1" and os.environ["RANK"] == "0" and int(os.environ["MASTER_PORT"]) > 0
    with pytest.raises(ValueError, match="no model directory"):
        E.make_engine("vllm", "gdso.engine")


def test_rl_start_engine_saves_the_initial_scorer_for_vllm(fake_vllm, sc, tmp_path):
    from zreward.trainers import gdso, rl

    loop = SimpleNamespace(run_dir=SimpleNamespace(root=tmp_path), is_main=True, rank=0,
                           acc=SimpleNamespace(wait_for_everyone=lambda: None))
    eng = rl.start_engine(gdso.GDSOConfig(engine="vllm"), sc, loop)
    (llm,) = fake_vllm
    assert llm.kw["model"] == str(tmp_path / "vllm_init") and (tmp_path / "vllm_init" / "zreward.json").is_file()
    assert llm.kw["enable_sleep_mode"] is True and eng.asleep  # the first generate wakes it with the weights
    assert isinstance(rl.start_engine(gdso.GDSOConfig(), sc, loop), E.HFEngine)
