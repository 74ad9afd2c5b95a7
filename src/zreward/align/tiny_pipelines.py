"""Tiny diffusers flow-matching pipelines built from config, offline, for tests and smoke runs (seconds on CPU).

What is implemented: `build_tiny_pipeline(family, out_dir)` writes a diffusers pipeline directory (`model_index.json`,
one folder per component, the real `save_pretrained` format) for

- `"sd3"`:    `StableDiffusion3Pipeline` — SD3Transformer2DModel, two CLIPTextModelWithProjection, no T5
              (`text_encoder_3=None`: the pipeline then uses zeros for the T5 part, as SD3 allows), AutoencoderKL.
- `"flux"`:   `FluxPipeline` — FluxTransformer2DModel (with guidance embedding, as FLUX.1-dev), CLIPTextModel,
              T5EncoderModel, AutoencoderKL with 1 latent channel (4 after 2×2 packing).
- `"zimage"`: `ZImagePipeline` — ZImageTransformer2DModel, a Qwen3 text encoder (chat template with
              `enable_thinking`, as the pipeline calls it), AutoencoderKL with 16 latent channels.
- `"qwenimage"`: `QwenImagePipeline` — QwenImageTransformer2DModel, a Qwen2.5-VL text encoder (text path only),
              AutoencoderKLQwenImage (4 latent channels, 4× spatial downsampling, per-channel mean/std).

The configs follow diffusers' own `get_dummy_components()` in spirit (one or two layers, widths 16–32), every VAE
downsamples (by 2; Qwen-Image's by 4), so the tensors the tuner differentiates really are latents, and every
tokenizer is one byte-level BPE trained locally in milliseconds (no hub access), wrapped in
`PreTrainedTokenizerFast`. Weights are random: these pipelines test plumbing, equalities and gradient flow.
"""
from __future__ import annotations

from pathlib import Path

import torch

from zreward.align.generator import _grammar_corpus

FAMILIES = ("sd3", "flux", "zimage", "qwenimage")
SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# A ChatML template that accepts (and ignores) `enable_thinking`, which ZImagePipeline passes.
CHAT_TEMPLATE = ("{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def build_tiny_text_tokenizer(max_length: int = 32, vocab_size: int = 320):
    """A `PreTrainedTokenizerFast` (byte-level BPE on the ShapesWorld grammar, `</s>` appended, pad id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_grammar_corpus() + ["a photo of a cat user assistant"], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=max_length, chat_template=CHAT_TEMPLATE)


def _vae(latent_channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8], layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=32,
                         use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5, shift_factor=0.06)


def _clip(vocab: int, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, projection_dim=16, max_position_embeddings=32,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_act="gelu")
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def build_tiny_pipeline(family: str, out_dir: str | Path, seed: int = 0):
    """Build the tiny pipeline of `family` (see the module docstring), save it to `out_dir`, return the pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    torch.manual_seed(seed)
    tok = build_tiny_text_tokenizer()
    vocab = len(tok)
    if family == "sd3":
        from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

        tr = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                   caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16)
        pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                        vae=_vae(4), text_encoder=_clip(vocab, True), tokenizer=tok,
                                        text_encoder_2=_clip(vocab, True), tokenizer_2=tok,
                                        text_encoder_3=None, tokenizer_3=None)
    elif family == "flux":
        from diffusers import FluxPipeline, FluxTransformer2DModel
        from transformers import T5Config, T5EncoderModel

        tr = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                    pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=[4, 4, 8])
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=2))
        sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=16, max_image_seq_len=256)
        pipe = FluxPipeline(transformer=tr, scheduler=sched, vae=_vae(1), text_encoder=_clip(vocab, False),
                            tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok)
    elif family == "qwenimage":
        from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        text = {"vocab_size": vocab + 3, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2,
                "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}}
        # vision token ids beyond the tokenizer's vocabulary: the text never contains them
        te = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
            text_config=text, vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                                             "out_hidden_size": 16},
            image_token_id=vocab, video_token_id=vocab + 1, vision_start_token_id=vocab + 2,
            vision_end_token_id=vocab + 2))
        vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True], latents_mean=[0.1, 0.0, -0.1, 0.0],
                                     latents_std=[1.5, 1.0, 2.0, 1.0])
        tr = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                         guidance_embeds=False, axes_dims_rope=(8, 4, 4))
        sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=16, max_image_seq_len=256)
        pipe = QwenImagePipeline(transformer=tr, scheduler=sched, vae=vae, text_encoder=te, tokenizer=tok)
    else:
        from diffusers import ZImagePipeline, ZImageTransformer2DModel
        from transformers import Qwen3Config, Qwen3Model

        tr = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                      n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                      qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                      axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
        te = Qwen3Model(Qwen3Config(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                                    max_position_embeddings=128))
        sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=16, max_image_seq_len=256)
        pipe = ZImagePipeline(transformer=tr, scheduler=sched, vae=_vae(16), text_encoder=te, tokenizer=tok)
    pipe.save_pretrained(out_dir)
    return pipe
