"""GPU benchmark: direct-mode scoring throughput of a real-size VLM architecture (random bf16 weights) vs roofline.

Usage (one GPU):  python benchmarks/bench_scorer_gpu.py --arch qwen3_vl_8b --batch 16 64 --dims 1 4
CPU smoke run:    python benchmarks/bench_scorer_gpu.py --arch qwen3_vl_8b --smoke   (scaled-down config, CPU)

Builds the architecture from config on the device (no download), wraps it in `zreward.models.scorer.Scorer` with the
locally trained tiny tokenizer (its ids are a subset of the real vocabulary), and times `Scorer.score` on 448-px
images (28×28 patches of 16 px → 196 image tokens per image after the 2×2 merge). Reported: img/s and the prefill
roofline img/s = peak_flops / (2 · N_params_LM · tokens_per_image_scored) (LM without embeddings/lm_head), where
tokens_per_image_scored is the sequence length summed over the scored dims, plus the vision tower's
2 · N_vision · patches per sequence.
Reference (measured earlier with HF eager on an H200): Qwen3-VL-8B, batch 64, 448 px → 86 img/s ≈ 57% of 152 img/s.
"""
from __future__ import annotations

import argparse
import time

import torch

ARCHS = {
    # Public Qwen3-VL-8B-Instruct config values.
    "qwen3_vl_8b": ("qwen3_vl", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                     rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                      "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
                    dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                         out_hidden_size=4096, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24])),
    # Qwen3.5 ("9B-style" transformers defaults: 32 layers, 3 gated-delta-net : 1 full-attention).
    "qwen3_5_9b": ("qwen3_5", dict(vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                                   num_attention_heads=16, num_key_value_heads=4, head_dim=256,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor":
                                                    0.25, "mrope_section": [11, 11, 10], "mrope_interleaved": True}),
                   dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
                        out_hidden_size=4096, num_position_embeddings=2304)),
}


def build(arch: str, device: str, smoke: bool):
    from transformers import AutoConfig, AutoModelForImageTextToText

    from zreward.models.families import get_family
    from zreward.models.preprocess import PixelSpec
    from zreward.models.scorer_config import ScorerConfig
    from zreward.models.tiny_tokenizer import build_tiny_tokenizer
    from zreward.models.scorer import Scorer

    family, text, vision = ARCHS[arch]
    text, vision = dict(text), dict(vision)
    if smoke:  # same code path, toy sizes
        text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, vocab_size=4096)
        text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=[2, 1, 1] if family == "qwen3_5"
                                       else [4, 6, 6])
        vision.update(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128)
        if "deepstack_visual_indexes" in vision:
            vision["deepstack_visual_indexes"] = [1]
        if family == "qwen3_5":
            text.update(linear_num_key_heads=4, linear_num_value_heads=4, linear_key_head_dim=32,
                        linear_value_head_dim=32)
    spec = get_family(family)
    cfg = ScorerConfig(family=family)
    tok = build_tiny_tokenizer(spec, cfg.level_strings)
    t2i = tok.convert_tokens_to_ids
    hf = AutoConfig.for_model(family, text_config=dict(text, pad_token_id=tok.pad_token_id,
                                                       eos_token_id=tok.eos_token_id),
                              vision_config=dict(vision, spatial_merge_size=2, temporal_patch_size=2),
                              image_token_id=t2i("<|image_pad|>"), video_token_id=t2i("<|video_pad|>"),
                              vision_start_token_id=t2i("<|vision_start|>"), vision_end_token_id=t2i("<|vision_end|>"))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(hf, dtype=dtype).eval()
    cfg.level_token_ids = t2i(cfg.level_strings)
    pix = PixelSpec(kind="qwen", patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=448 * 448,
                    max_pixels=448 * 448)
    return Scorer(model, tok, pix, cfg, spec, device=device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="qwen3_vl_8b", choices=sorted(ARCHS))
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 4], help="numbers of rubric dims scored per image")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--smoke", action="store_true", help="toy config on CPU to check the script runs")
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else "cuda"
    s = build(args.arch, device, args.smoke)
    named = dict(s.model.named_parameters())
    vis = sum(p.numel() for n, p in named.items() if "visual." in n)
    # Embedding lookups cost no FLOPs and lm_head runs only at the score position: leave both out of the roofline.
    lm = sum(p.numel() for n, p in named.items() if "visual." not in n and "embed_tokens" not in n
             and not n.startswith("lm_head"))
    size = 64 if args.smoke else 448
    print(f"{args.arch}{' (smoke)' if args.smoke else ''}: LM {lm / 1e9:.2f}B + vision {vis / 1e9:.2f}B params, "
          f"{size}px, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    all_dims = s.dims
    for nd in args.dims:
        dims = all_dims[:nd]
        for b in args.batch:
            imgs = torch.rand(b, 3, size, size, device=device)
            prompts = [f"a photo of {i} red apples on a wooden table next to a blue cup" for i in range(b)]
            s.score(prompts, imgs, dims=dims)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.reps):
                s.score(prompts, imgs, dims=dims)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / args.reps
            batch, _ = s.encode_items([s.direct_prompt(prompts[0], d) for d in dims], [0] * nd,
                                      s.prepare_images(imgs[:1]))
            seq_tokens = int(batch.lengths.sum())
            patches = int(batch.inputs["pixel_values"].shape[0])
            flops = 2 * lm * seq_tokens + 2 * vis * patches
            roof = args.peak_tflops * 1e12 / flops
            mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
            print(f"dims={nd} batch={b:3d}: {b / dt:8.1f} img/s  roofline {roof:8.1f} img/s  "
                  f"({100 * b / dt / roof:5.1f}%)  tokens/img {seq_tokens}  peak mem {mem:.1f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
