"""One-command GPU check of the real-scale path: random weights from configs/arch (no hub), a pass/fail table.

Usage (one H100/H200, ≤ 10 min):   python benchmarks/gpu_check.py [--only scoring reward gdso risd]
CPU smoke run (default test suite): python benchmarks/gpu_check.py --device cpu --tiny

Each model is built from its configs/arch/*.json on the device (random bf16 weights, the locally trained tiny
tokenizer; its ids are a subset of the real vocabulary, and generation is kept inside it with EOS suppressed, so
every chain has its full length). Checks, each caught separately (an out-of-memory stage reports FAIL (OOM)):

1. scoring — direct scoring img/s of the Qwen3.5-9B architecture at 448 px (batch 64, one dim) vs its prefill
   roofline peak_flops / (2·N_LM·tokens + 2·N_vision·patches) (LM without embeddings / lm_head, which runs at the
   score position only). Pass ≥ 80 % (issue 13's goal; Qwen3-VL-8B in HF eager code reached 57 %, shared NOTES).
2. reward — d(reward)/d(pixels) of the 9B architecture, batch 4 at 448 px, gradient checkpointing, frozen weights.
   Pass ≤ 1.0 s and ≤ 40 GB (≈ 3× / 2× the Qwen3-VL-8B reference: 0.35 s, 17 GiB).
3. gdso — one GDSO step of the Qwen3.5-27B architecture, LoRA r=64 on every linear layer of the language model,
   gradient checkpointing, at the per-rank micro-batch of configs/gdso/qwen3_5_27b.yaml (groups_per_micro prompt
   groups × max_per_prompt images × 4 dims × group_size chains of max_new_tokens): rollout + scoring forward
   (and the adapters-off reference forward of the KL term) + backward + AdamW step. Pass: peak ≤ 70 GB (goal).
4. risd — one RISD teacher-cache batch (configs/risd/qwen3_5_9b.yaml `teacher`: batch_size images × 4 dims ×
   samples chains of max_new_tokens) through the 27B model's reasoning-mode `score`. Pass: peak ≤ 75 GB (fits an
   80 GB card).

Memory is `torch.cuda.max_memory_allocated` in GB (1e9 bytes). On CPU (`--tiny` smoke) nothing is judged.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "configs" / "arch"
GB = 1e9
THRESHOLDS = {"scoring_roofline_pct": 80.0, "reward_s": 1.0, "reward_gb": 40.0, "gdso_gb": 70.0, "risd_gb": 75.0}
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2,
                 linear_key_head_dim=16, linear_value_head_dim=16, vocab_size=4096,
                 layer_types=["linear_attention"] * 3 + ["full_attention"])
TINY_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, num_position_embeddings=16)


def build_scorer(arch: str, device: str, tiny: bool, image_size: int):
    """A `Scorer` over a random model of configs/arch/<arch>.json (toy sizes with `tiny`)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from zreward.models.families import get_family
    from zreward.models.load import warn_without_linear_attention_kernels
    from zreward.models.preprocess import PixelSpec
    from zreward.models.scorer_config import ScorerConfig
    from zreward.models.tiny_tokenizer import build_tiny_tokenizer
    from zreward.models.scorer import Scorer

    cfg_json = json.loads((ARCH / f"{arch}.json").read_text())["config"]
    family = cfg_json["model_type"]
    text = {k: v for k, v in cfg_json["text_config"].items() if k != "model_type"}
    vision = {k: v for k, v in cfg_json["vision_config"].items() if k != "model_type"}
    if tiny:
        text.update(TINY_TEXT)
        text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=[2, 1, 1])  # sums to 32·0.25/2
        vision.update(TINY_VISION, out_hidden_size=text["hidden_size"])
    spec = get_family(family)
    cfg = ScorerConfig(family=spec.name)
    tok = build_tiny_tokenizer(spec, cfg.level_strings)
    t2i = tok.convert_tokens_to_ids
    text.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    hf = AutoConfig.for_model(family, text_config=text, vision_config=vision, tie_word_embeddings=False,
                              image_token_id=t2i("<|image_pad|>"), video_token_id=t2i("<|video_pad|>"),
                              vision_start_token_id=t2i("<|vision_start|>"), vision_end_token_id=t2i("<|vision_end|>"))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(hf, dtype=dtype).eval()
    warn_without_linear_attention_kernels(family, device)
    cfg.level_token_ids = t2i(cfg.level_strings)
    patch = vision["patch_size"]
    pix = PixelSpec(kind="qwen", patch_size=patch, merge_size=2, temporal_patch_size=2,
                    min_pixels=image_size * image_size, max_pixels=image_size * image_size)
    sc = Scorer(model, tok, pix, cfg, spec, device=device)
    # Chains stay inside the tokenizer's ids and never stop early (full-length chains: the worst case).
    vocab = hf.get_text_config().vocab_size
    sc.suppress_ids = sorted(set(sc.suppress_ids) | set(range(len(tok), vocab)) | {tok.eos_token_id, tok.pad_token_id})
    return sc


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GB if device.startswith("cuda") else None


def _prompts(n: int) -> list[str]:
    return [f"a photo of {i % 7 + 1} red apples on a wooden table next to a blue cup" for i in range(n)]


def check_scoring(sc, a) -> dict:
    """Direct scoring throughput vs the prefill roofline."""
    dims, b, size = sc.dims[:1], a.score_batch, a.image_size
    imgs, prompts = torch.rand(b, 3, size, size, device=a.device), _prompts(b)
    sc.score(prompts, imgs, dims=dims)  # warm-up
    _reset_peak(a.device)
    _sync(a.device)
    t = time.perf_counter()
    for _ in range(a.reps):
        sc.score(prompts, imgs, dims=dims)
    _sync(a.device)
    img_s = b * a.reps / (time.perf_counter() - t)
    named = dict(sc.model.named_parameters())
    vis = sum(p.numel() for n, p in named.items() if "visual." in n)
    lm = sum(p.numel() for n, p in named.items() if "visual." not in n and "embed_tokens" not in n
             and "lm_head" not in n)
    batch, _ = sc.encode_items([sc.direct_prompt(prompts[0], dims[0])], [0], sc.prepare_images(imgs[:1]))
    flops = 2 * lm * int(batch.lengths.sum()) + 2 * vis * int(batch.inputs["pixel_values"].shape[0])
    roof = a.peak_tflops * 1e12 / flops
    return {"img_s": img_s, "roofline_img_s": roof, "roofline_pct": 100 * img_s / roof, "peak_gb": _peak_gb(a.device)}


def check_reward(sc, a) -> dict:
    """d(reward)/d(pixels) time and memory (gradient checkpointing, frozen weights)."""
    from zreward.models.load import prepare_for_training

    sc.model = prepare_for_training(sc.model, None, True, sc.config.level_token_ids).train()
    sc.model.requires_grad_(False)
    b = a.reward_batch
    prompts = _prompts(b)

    def once():
        x = torch.rand(b, 3, a.image_size, a.image_size, device=a.device, requires_grad=True)
        sc.reward(prompts, x).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()

    once()  # warm-up
    _reset_peak(a.device)
    _sync(a.device)
    t = time.perf_counter()
    for _ in range(a.reps):
        once()
    _sync(a.device)
    return {"s": (time.perf_counter() - t) / a.reps, "peak_gb": _peak_gb(a.device)}


def _trainer_config(module, yaml_name: str):
    from zreward.trainers.config import load_config

    return load_config(module.Config, ROOT / "configs" / yaml_name)


def check_gdso(sc, a) -> dict:
    """One GDSO step (LoRA, checkpointing) at the shipped per-rank micro-batch."""
    from zreward.models.lora import LoraOptions
    from zreward.models.load import prepare_for_training
    from zreward.trainers import gdso
    from zreward.trainers import rollout as R
    from zreward.trainers.rl import MicroBatch, eval_rollout

    cfg = _trainer_config(gdso, "gdso/qwen3_5_27b.yaml")
    g = cfg.gdso
    if a.tiny:
        g.group_size, g.max_new_tokens = 2, 4
    lora = LoraOptions(r=cfg.model.lora_r, alpha=cfg.model.lora_alpha)
    sc.model = prepare_for_training(sc.model, lora, cfg.model.gradient_checkpointing, sc.config.level_token_ids)
    sc.model.train()
    sc.generation_batch = cfg.model.generation_batch
    groups = g.groups_per_micro or cfg.data.prompts_per_batch
    per = cfg.data.max_per_prompt or 4
    b, dims, L = groups * per, sc.dims, len(sc.levels)
    prompts = [_prompts(groups)[i // per] for i in range(b)]
    group_ids = np.repeat(np.arange(groups), per)
    images = torch.rand(b, 3, a.image_size, a.image_size)
    target = torch.softmax(torch.randn(b, len(dims), L) * 2, -1)
    lab = R.Labels((target * sc.levels).sum(-1), torch.ones(b, len(dims)), target,
                   torch.ones(b, len(dims), dtype=torch.bool))
    opt = torch.optim.AdamW([p for p in sc.model.parameters() if p.requires_grad], lr=1e-5)
    _reset_peak(a.device)
    _sync(a.device)
    t0 = time.perf_counter()
    ro = R.rollout(sc, prompts, images, dims, g.group_size, g.max_new_tokens, g.temperature)
    _sync(a.device)
    t_roll = time.perf_counter() - t0
    mb = MicroBatch(ro, eval_rollout(sc, g, prompts, images, dims, g.dist_samples), lab, group_ids)
    loss, _, _ = gdso.gdso_losses(g, sc, mb, None, None)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(a.device)
    return {"chains": len(ro.chains.chain_ids), "tokens": g.max_new_tokens, "rollout_s": t_roll,
            "step_s": time.perf_counter() - t0, "peak_gb": _peak_gb(a.device)}


def check_risd(sc, a) -> dict:
    """One RISD teacher-cache batch: reasoning-mode scoring with M sampled chains per (image, dim)."""
    from zreward.trainers import risd

    t = _trainer_config(risd, "risd/qwen3_5_9b.yaml").teacher
    b, samples, tokens = (2, 2, 4) if a.tiny else (t.batch_size, t.samples, t.max_new_tokens or 512)
    sc.config.max_new_tokens = tokens
    sc.model.eval()
    images, prompts = torch.rand(b, 3, a.image_size, a.image_size), _prompts(b)
    _reset_peak(a.device)
    _sync(a.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = sc.score(prompts, images, reasoning=True, samples=samples)
    _sync(a.device)
    assert torch.isfinite(out.probs).all()
    return {"chains": b * len(sc.dims) * samples, "tokens": tokens, "s": time.perf_counter() - t0,
            "peak_gb": _peak_gb(a.device)}


def _run(name: str, fn, *args) -> dict:
    t = time.perf_counter()
    try:
        out = fn(*args)
    except torch.OutOfMemoryError as e:
        out = {"error": f"OOM: {str(e).splitlines()[0][:120]}"}
    out["wall_s"] = time.perf_counter() - t
    print(json.dumps({name: out}), flush=True)
    return out


def _rows(res: dict, judged: bool) -> list[tuple[str, str, str, str]]:
    """(check, measured, threshold, PASS/FAIL/-) rows of the table."""
    def row(check, value, fmt, limit, ok_if_le):
        if value is None:
            return check, "n/a", "", "-"
        status = "-" if not judged else ("PASS" if (value <= limit if ok_if_le else value >= limit) else "FAIL")
        return check, fmt.format(value), ("≤ " if ok_if_le else "≥ ") + str(limit), status

    out = []
    for name, r in res.items():
        if "error" in r:
            out.append((name, r["error"], "", "FAIL"))
        elif name == "scoring":
            out.append(("9B direct scoring, % of roofline", r["roofline_pct"], "{:.1f} %",
                        THRESHOLDS["scoring_roofline_pct"], False))
            out.append(("9B direct scoring img/s (roofline)", f"{r['img_s']:.1f} ({r['roofline_img_s']:.1f})", "", "-"))
        elif name == "reward":
            out.append(("9B d(reward)/d(pixels) s", r["s"], "{:.3f} s", THRESHOLDS["reward_s"], True))
            out.append(("9B d(reward)/d(pixels) peak", r["peak_gb"], "{:.1f} GB", THRESHOLDS["reward_gb"], True))
        elif name == "gdso":
            out.append((f"27B GDSO step peak ({r['chains']} chains × {r['tokens']} tok)", r["peak_gb"], "{:.1f} GB",
                        THRESHOLDS["gdso_gb"], True))
            out.append(("27B GDSO step time (rollout)", f"{r['step_s']:.1f} s ({r['rollout_s']:.1f} s)", "", "-"))
        elif name == "risd":
            out.append((f"27B RISD teacher cache peak ({r['chains']} chains × {r['tokens']} tok)", r["peak_gb"],
                        "{:.1f} GB", THRESHOLDS["risd_gb"], True))
            out.append(("27B RISD teacher cache batch time", f"{r['s']:.1f} s", "", "-"))
    return [x if len(x) == 4 else row(*x) for x in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes of the same architectures (CPU smoke test)")
    ap.add_argument("--only", nargs="+", choices=["scoring", "reward", "gdso", "risd"],
                    default=["scoring", "reward", "gdso", "risd"])
    ap.add_argument("--image-size", type=int, default=None, help="default 448 (64 with --tiny)")
    ap.add_argument("--score-batch", type=int, default=None, help="default 64 (4 with --tiny)")
    ap.add_argument("--reward-batch", type=int, default=None, help="default 4 (2 with --tiny)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    a = ap.parse_args(argv)
    a.image_size = a.image_size or (64 if a.tiny else 448)
    a.score_batch = a.score_batch or (4 if a.tiny else 64)
    a.reward_batch = a.reward_batch or (2 if a.tiny else 4)
    if a.tiny:
        a.reps = 1
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {name}{' (tiny smoke)' if a.tiny else ''}: {', '.join(a.only)}", flush=True)
    res: dict[str, dict] = {}
    for arch, stages in (("qwen3_5_9b", ("scoring", "reward")), ("qwen3_5_27b", ("gdso", "risd"))):
        todo = [s for s in stages if s in a.only]
        if not todo:
            continue
        sc = build_scorer(arch, a.device, a.tiny, a.image_size)
        for stage in todo:
            res[stage] = _run(stage, globals()[f"check_{stage}"], sc, a)
        del sc
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    rows = _rows(res, judged=a.device.startswith("cuda") and not a.tiny)
    from zreward.models.load import missing_linear_attention_kernels

    missing = missing_linear_attention_kernels()
    rows.append(("linear-attention kernels (zreward[gpu])", "missing: " + ", ".join(missing) if missing else "present",
                 "", "-"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}}  {'measured':>22}  {'threshold':>10}  status")
    for check, value, limit, status in rows:
        print(f"{check:<{width}}  {value:>22}  {limit:>10}  {status}")
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
