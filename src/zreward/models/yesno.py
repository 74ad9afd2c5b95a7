"""Yes/no (RewardDance-style) scoring, the `mode: "yesno"` of the `Scorer`: the question with two images, the
answer tokens, the P("yes") readout, `prob_vs_reference`, and `score_yesno`, which `Scorer.score` uses for a yes/no
scorer.

P(yes) that image A is better than image B for the prompt; a single image is scored against the reference image
stored in zreward.json, symmetrised over both orders (see `zreward.trainers.rewarddance` for the training side).
The functions take the `Scorer` as their first argument (duck-typed, so this module does not import it).
"""
from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zreward.data.images import image_to_tensor, load_image
from zreward.models.preprocess import PixelInputs

_NORMALIZE = ("full", "restricted")


def yes_no_logprobs(logits: torch.Tensor, yes_id: int | None, no_id: int | None, normalize: str,
                    what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(yes), log P(no)), each (B,), from answer-position logits.

    Args:
        logits: (B, V) full-vocabulary logits with `yes_id`/`no_id`, or (B, 2) logits ordered (yes, no).
        normalize: "full" (softmax over the vocabulary) or "restricted" (softmax over {yes, no}).
        what: the caller's name, for error messages.
    """
    if normalize not in _NORMALIZE:
        raise ValueError(f"{what}: normalize={normalize!r}, expected one of {_NORMALIZE}")
    if logits.dim() != 2:
        raise ValueError(f"{what}: logits has shape {tuple(logits.shape)}, expected (B, V) full-vocabulary logits "
                         f"at the answer position, or (B, 2) logits ordered (yes, no)")
    if (yes_id is None) != (no_id is None):
        raise ValueError(f"{what}: give both yes_id and no_id (full-vocabulary logits) or neither ((B, 2) logits)")
    if yes_id is None:
        if logits.shape[1] != 2:
            raise ValueError(f"{what}: without yes_id/no_id, logits must be (B, 2) ordered (yes, no), got "
                             f"{tuple(logits.shape)}")
        if normalize == "full":
            raise ValueError(f"{what}: normalize='full' needs full-vocabulary logits and yes_id/no_id; "
                             f"(B, 2) logits only allow normalize='restricted'")
        yes_id, no_id = 0, 1
    V = logits.shape[1]
    if not (0 <= yes_id < V and 0 <= no_id < V) or yes_id == no_id:
        raise ValueError(f"{what}: yes_id={yes_id}, no_id={no_id}, expected two different ids in [0, {V})")
    if normalize == "full":
        logp = F.log_softmax(logits, dim=-1)
        return logp[:, yes_id], logp[:, no_id]
    # restricted: log σ(d) and log σ(−d), d = l_yes − l_no, so only the two logits matter.
    d = logits[:, yes_id] - logits[:, no_id]
    return F.logsigmoid(d), F.logsigmoid(-d)


def yes_probability(logits: torch.Tensor, yes_id: int | None = None, no_id: int | None = None,
                    normalize: str = "restricted") -> torch.Tensor:
    """P("yes") — the RewardDance reward — from answer-position logits.

    Args:
        logits: (B, V) with yes_id/no_id, or (B, 2) ordered (yes, no).
        normalize: "restricted" (default; P(yes) / (P(yes) + P(no)), insensitive to other tokens) or "full".

    Returns:
        (B,) probabilities, differentiable.
    """
    log_yes, _ = yes_no_logprobs(logits, yes_id, no_id, normalize, "yes_probability")
    return log_yes.exp()


@dataclass
class YesNoConfig:
    """The yes/no question; stored in the final dir's zreward.json (`yesno`)."""

    question: str = field(default="Prompt: {prompt}\nIs image A better than image B for this prompt? Answer yes or no.",
                          metadata={"help": "question text after the two images; {prompt} is filled in"})
    label_a: str = field(default="Image A:", metadata={"help": "text before the first image"})
    label_b: str = field(default="Image B:", metadata={"help": "text before the second image"})
    answer_prefix: str = field(default="Answer:", metadata={"help": "assistant prefix; the next token is the answer"})
    yes: str = field(default=" yes", metadata={"help": "the 'yes' answer (one token after answer_prefix)"})
    no: str = field(default=" no", metadata={"help": "the 'no' answer (one token after answer_prefix)"})


def answer_token_ids(scorer, yn: YesNoConfig, add_tokens: bool = True) -> tuple[int, int]:
    """Ids of the yes/no answers, checked to be one token each right after `answer_prefix`.

    When they are not and `add_tokens`, they are added to the tokenizer and the embeddings resized (mean init).

    Raises:
        ValueError: an answer is not one token and cannot be added (LoRA model, or add_tokens=False).
    """
    tok = scorer.tokenizer

    def ok(s: str) -> bool:
        alone = tok.encode(s, add_special_tokens=False)
        pre = tok.encode(yn.answer_prefix, add_special_tokens=False)
        return len(alone) == 1 and tok.encode(yn.answer_prefix + s, add_special_tokens=False) == pre + alone

    bad = [s for s in (yn.yes, yn.no) if not ok(s)]
    if bad and add_tokens and not hasattr(scorer.model, "peft_config"):
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(s, normalized=False, special=False) for s in bad])
        emb = scorer.model.get_input_embeddings().weight
        if len(tok) > emb.shape[0]:
            scorer.model.resize_token_embeddings(len(tok), mean_resizing=True)
        bad = [s for s in (yn.yes, yn.no) if not ok(s)]
    if bad:
        raise ValueError(f"rewarddance.yesno: answers {bad} are not single tokens after {yn.answer_prefix!r} "
                         f"(got {[tok.tokenize(yn.answer_prefix + s) for s in bad]}); choose answers that are, or "
                         f"train without LoRA so that they can be added as tokens")
    yes_id, no_id = (tok.encode(s, add_special_tokens=False)[0] for s in (yn.yes, yn.no))
    if yes_id == no_id:
        raise ValueError(f"rewarddance.yesno: yes {yn.yes!r} and no {yn.no!r} map to the same token {yes_id}")
    return yes_id, no_id


def pair_prompt(scorer, yn: YesNoConfig, prompt: str) -> str:
    """Rendered chat text with two image placeholders (A then B), ending at the answer position."""
    content = [{"type": "text", "text": yn.label_a}, {"type": "image"}, {"type": "text", "text": yn.label_b},
               {"type": "image"}, {"type": "text", "text": yn.question.format(prompt=prompt)}]
    messages = [{"role": "user", "content": content}]
    chat = scorer.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return chat + yn.answer_prefix


def pair_logits(scorer, yn: YesNoConfig, prompts: list[str], pixels: PixelInputs, ia, ib) -> torch.Tensor:
    """Full-vocabulary logits (N, V) at the answer position for N questions "is pixels[ia] better than pixels[ib]".

    Args:
        prompts: N prompts.  pixels: prepared images.  ia, ib: (N,) indices into `pixels` (A and B).
    """
    texts = [pair_prompt(scorer, yn, p) for p in prompts]
    batch, _ = scorer.encode_items(texts, [[int(a), int(b)] for a, b in zip(ia, ib)], pixels)
    return scorer.logits_at(batch, batch.last_pos)


@torch.no_grad()
def prefer_prob(scorer, yn: YesNoConfig, ids: tuple[int, int], prompts: list[str], pixels: PixelInputs, ia, ib,
                batch_size: int = 64) -> torch.Tensor:
    """(N,) symmetrised P(A better than B) = ½·[P(yes | A, B) + 1 − P(yes | B, A)], restricted to {yes, no}."""
    ia, ib = np.asarray(ia), np.asarray(ib)
    out = []
    for s in range(0, len(ia), batch_size):
        a, b, p = ia[s:s + batch_size], ib[s:s + batch_size], prompts[s:s + batch_size]
        lg = pair_logits(scorer, yn, p + p, pixels, np.concatenate([a, b]), np.concatenate([b, a]))
        y = yes_probability(lg.float(), *ids).view(2, -1)
        out.append(0.5 * (y[0] + 1 - y[1]))
    return torch.cat(out).cpu() if out else torch.zeros(0)


def concat_pixels(a: PixelInputs, b: PixelInputs) -> PixelInputs:
    grids = None if a.grids is None else a.grids + b.grids
    source = None if a.source is None or b.source is None else a.source + b.source
    return PixelInputs(a.values + b.values, grids, a.n_tokens + b.n_tokens, source)


def encode_png(img: torch.Tensor) -> str:
    """(3, H, W) uint8 or float in [0, 1] → base64 PNG."""
    x = img if img.dtype == torch.uint8 else (img.clamp(0, 1) * 255).round().to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).cpu().numpy()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(b64: str) -> torch.Tensor:
    """base64 PNG → (3, H, W) float in [0, 1]."""
    return image_to_tensor(load_image(base64.b64decode(b64), what="zreward.json yesno.reference_png"))


def prob_vs_reference(scorer, prompts: list[str], images, batch_size: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """P(image better than the reference stored in zreward.json), symmetrised over both orders.

    Args:
        scorer: a `Scorer` whose zreward.json has a `yesno` section.  prompts: B prompts.  images: B images.

    Returns:
        (p (B,), mass (B,)): p = ½·[P(yes | img, ref) + 1 − P(yes | ref, img)] restricted to {yes, no}; mass =
        P(yes) + P(no) under the full softmax, averaged over both orders (how much the model answers with them).
    """
    y = scorer.config.yesno
    if not y:
        raise ValueError("zreward.json: mode is 'yesno' but the 'yesno' section is missing")
    yn = YesNoConfig(**{k: y[k] for k in asdict(YesNoConfig())})
    ids = (int(y["yes_id"]), int(y["no_id"]))
    b = len(prompts)
    if len(images) != b:
        raise ValueError(f"got {b} prompts but {len(images)} images")
    ref = scorer.prepare_images(decode_png(y["reference_png"]).unsqueeze(0))
    p_all, mass_all = [], []
    bs = batch_size or b or 1
    with torch.no_grad():
        for s in range(0, b, bs):
            ps, ims = prompts[s:s + bs], images[s:s + bs]
            n = len(ps)
            pix = concat_pixels(scorer.prepare_images(ims), ref)
            lg = pair_logits(scorer, yn, ps + ps, pix, list(range(n)) + [n] * n, [n] * n + list(range(n))).float()
            yes = yes_probability(lg, *ids).view(2, n)
            p_all.append(0.5 * (yes[0] + 1 - yes[1]))
            full = lg.log_softmax(-1)
            mass_all.append((full[:, ids[0]].exp() + full[:, ids[1]].exp()).view(2, n).mean(0))
    p = torch.cat(p_all).cpu() if p_all else torch.zeros(0)
    return p, (torch.cat(mass_all).cpu() if mass_all else torch.zeros(0))


def score_yesno(scorer, prompts: list[str], images, dims: list[str] | None = None, batch_size: int | None = None):
    """`Scorer.score` of a yes/no scorer (also before its mode is saved), as its `ScoreOutput`: probs (B, D, L) put
    1 − p on the lowest level and p on the highest, p = `prob_vs_reference` (so mean = 1 + 4·p on the default
    levels, every dim); in_level_mass = P(yes) + P(no) under the full softmax."""
    dims = scorer.resolve_dims(dims)
    p, mass = prob_vs_reference(scorer, prompts, images, batch_size)
    b = len(p)
    probs = torch.zeros(b, len(dims), len(scorer.levels))
    probs[..., 0], probs[..., -1] = (1 - p).unsqueeze(1), p.unsqueeze(1)
    return scorer.score_output(probs, mass.unsqueeze(1).expand(b, len(dims)).clone(), dims)
