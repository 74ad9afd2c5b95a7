"""A byte-level BPE tokenizer trained locally in well under a second, for tiny test/demo models.

It has: chat markup tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>` as pad), the family's image tokens, and
every rubric level ("1.0" ... "5.0") as a single added token, plus a small Jinja chat template that renders
`{"type": "image"}` content items as the family's image placeholder. It is wrapped in `PreTrainedTokenizerFast`, so
it saves/loads through the normal `save_pretrained`/`AutoTokenizer.from_pretrained` path like a real checkpoint's.
"""
from __future__ import annotations

from zreward.models.families import FamilySpec

# Enough English for BPE merges on the words the rubric prompts and reasoning chains use.
_CORPUS = [
    "Rate how well the image matches the prompt. Score the image from 1.0 to 5.0 in half steps.",
    "alignment: does the image show every object, colour, count and spatial relation the prompt asks for?",
    "realism: does the image look like a real photograph or a clean rendering, free of artifacts?",
    "aesthetics: is the composition balanced, are colours harmonious, is the image pleasant to look at?",
    "plausibility: are shapes, shadows, sizes and physics plausible, with nothing impossible or broken?",
    "Prompt: a red circle to the left of a blue square. Two green triangles above a yellow star.",
    "Reasoning: the image shows a small red circle and a large blue square; the circle is on the left, so the "
    "relation holds. The colours are correct but one object is missing, therefore the score is lower.",
    "The quick brown fox jumps over the lazy dog. A photo of a cat on a sofa, a dog in the park, a city at night.",
    "Score: good bad fair excellent poor image picture object objects shape shapes count left right above below "
    "red green blue yellow purple orange white black gray circle square triangle star hexagon small large medium",
    # the exact rubric texts of zreward.models.scorer_config.DEFAULT_RUBRICS and the direct prompt
    "Alignment: does the image show what the prompt asks for (objects, attributes, counts, relations)?",
    "Realism: does the image look real and clean, free of artifacts?",
    "Aesthetics: is the image well composed, with harmonious colours, pleasant to look at?",
    "Plausibility: are shapes, sizes, occlusions and shadows physically possible?",
    "user assistant system Rate the image from 1.0 to 5.0. Describe the image. "
    "Is image A better than image B for this prompt? yes no",  # (one corpus line)
    # ShapesWorld rationales and captions (zreward.data.shapes_world): short sequences = cheaper training on CPU
    "want 2 blue square: see 2. want 1 yellow triangle: see 0. left: no. right: yes. on: no. extra: none.",
    "3 objects: blue square, yellow triangle on blue square, red circle floating. 1 object: green circle.",
    "noise: 0.00. noise: 0.05. noise: 0.10. noise: 0.15. noise: 0.20. noise: 0.25. noise: 0.30. blur: 0.0. "
    "blur: 0.5. blur: 1.0. blur: 1.5. blur: 2.0. warp: 0.00. warp: 0.25. warp: 0.50. warp: 0.75. warp: 1.00.",
    "cut: 0. cut: 1. low contrast: 0. low contrast: 1. crowded: no. crowded: yes. unbalanced: no. unbalanced: yes. "
    "clash: 0. clash: 1. floating: 0. floating: 1. unstable: 0. unstable: 1. two three one purple triangles circles",
]


def chat_template_for(spec: FamilySpec) -> str:
    """A minimal ChatML-style Jinja template; image items render as the family placeholder."""
    ph = spec.placeholder
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}{{ '" + ph + "' }}"
        "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def build_tiny_tokenizer(spec: FamilySpec, level_strings: list[str], vocab_size: int = 1024):
    """Train a byte-level BPE and wrap it as a `PreTrainedTokenizerFast` with chat template and level tokens.

    Args:
        spec: family spec (image tokens to add, placeholder for the chat template).
        level_strings: e.g. ["1.0", "1.5", ..., "5.0"]; each becomes one added (non-special) token.
        vocab_size: BPE target size (the small corpus may stop earlier).

    Returns:
        A `transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *spec.extra_special]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    # Levels are plain (decodable) added tokens: matched before BPE, so "3.5" is always one token.
    tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in level_strings])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None)
    fast.add_special_tokens({"additional_special_tokens": list(spec.extra_special)})
    fast.chat_template = chat_template_for(spec)
    fast.padding_side = "right"
    return fast
