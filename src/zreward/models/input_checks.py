"""Checks on scoring inputs that must pass before any model call: prompt text, prompt length in tokens, image size.

These are exactly the things that would otherwise fail (or silently change the model's input) inside a batched
model call, so a server can refuse the one request that carries them instead of failing every request batched with
it, and a CLI can name the record:
- **text**: a prompt must be valid Unicode that encodes to UTF-8 (a lone surrogate such as JSON's `"\\ud800"` does
  not) and non-empty;
- **reserved tokens**: a prompt must not contain the text of any special token of the tokenizer (chat markers such
  as `<|im_start|>`, the family's image placeholder and image token such as `<|image_pad|>`, any added special
  token): the tokenizer parses them as control tokens, so such a prompt could add an image slot with no pixels
  behind it or forge a chat turn. They are refused, not escaped, so that what is scored is what the client sent;
- **length**: `prompt_tokens` counts tokens with the scorer's own tokenizer — the unit of the model's cost (4,000
  CJK characters are ≈ 12,000 tokens);
- **image size**: `zreward.models.preprocess.check_image_size` (the preprocessing's own constraints).
"""
from __future__ import annotations

from zreward.models.families import FamilySpec
from zreward.models.preprocess import check_image_size


class InputError(ValueError):
    """A scoring input is refused; `field` names it (e.g. "prompts[3]"), the message says what was expected."""

    def __init__(self, field: str, msg: str):
        super().__init__(f"{field}: {msg}")
        self.field, self.msg = field, msg


def reserved_tokens(tokenizer, family: FamilySpec) -> list[str]:
    """Texts a prompt may not contain: every special token of `tokenizer` plus the family's image tokens."""
    toks = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    toks |= set(tokenizer.all_special_tokens)
    toks |= {family.image_token, family.placeholder, *family.extra_special}
    return sorted(t for t in toks if t)


def check_text(text, field: str) -> None:
    """A non-empty string that encodes to UTF-8 (no lone surrogates)."""
    if not isinstance(text, str):
        raise InputError(field, f"expected a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(field, f"expected valid Unicode text; character {e.start} is a lone surrogate "
                                f"({text[e.start]!r}), which no UTF-8 text can hold") from None
    if not text.strip():
        raise InputError(field, "expected a non-empty prompt")


def check_prompt(prompt, field: str, reserved: list[str]) -> None:
    """`check_text` plus: no reserved (special) token text inside the prompt."""
    check_text(prompt, field)
    for t in reserved:
        if t in prompt:
            raise InputError(field, f"contains the reserved token {t!r} at character {prompt.index(t)}; special "
                                    f"tokens of the model's tokenizer are not allowed in prompts")


def prompt_tokens(tokenizer, prompts: list[str]) -> list[int]:
    """Number of tokens of each prompt on its own (no special tokens added), with the scorer's tokenizer."""
    if not prompts:
        return []
    return [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def check_image(image, field: str) -> None:
    """A decoded PIL image (or anything with width/height) that the preprocessing can take."""
    try:
        check_image_size(int(image.height), int(image.width))
    except ValueError as e:
        raise InputError(field, str(e)) from None


def check_scoring_inputs(scorer, prompts: list[str], images=None, fields: list[str] | None = None) -> list[int]:
    """Check B prompts (and B decoded images when given) for `scorer`; returns each prompt's token count.

    Args:
        fields: B names for messages (default "prompts[i]"); image errors use the same name.

    Raises:
        InputError naming the first bad input.
    """
    fields = fields or [f"prompts[{i}]" for i in range(len(prompts))]
    reserved = reserved_tokens(scorer.tokenizer, scorer.family)
    for p, f in zip(prompts, fields):
        check_prompt(p, f, reserved)
    if images is not None:
        for im, f in zip(images, fields):
            check_image(im, f)
    return prompt_tokens(scorer.tokenizer, prompts)
