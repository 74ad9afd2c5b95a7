"""`zreward.json`: the small JSON file that turns a VLM directory into a scorer.

It records what the weights alone do not: the family, the rubric levels and their token ids, whether level tokens
were added to the vocabulary, the dimensions with their rubric texts, the prompt templates (the direct prompt ends
at the score position; the reasoning prompt ends where the chain starts and `reasoning_close` leads back to the
score position), the default mode and the reward weights. Plain JSON — loading never unpickles anything.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CONFIG_NAME = "zreward.json"
DEFAULT_LEVELS = [1.0 + 0.5 * i for i in range(9)]
DEFAULT_DIMS = ["alignment", "realism", "aesthetics", "plausibility"]
DEFAULT_RUBRICS = {
    "alignment": "Alignment: does the image show what the prompt asks for (objects, attributes, counts, relations)?",
    "realism": "Realism: does the image look real and clean, free of artifacts?",
    "aesthetics": "Aesthetics: is the image well composed, with harmonious colours, pleasant to look at?",
    "plausibility": "Plausibility: are shapes, sizes, occlusions and shadows physically possible?",
}
# ShapesWorld's default dimension weights (alignment counts double).
DEFAULT_WEIGHTS = [0.4, 0.2, 0.2, 0.2]


def dim_weights(dims: list[str], weight_dims: list[str], weights: list[float]) -> list[float]:
    """The weight of each of `dims`, looked up in per-dim `weights` listed for `weight_dims` (same order).

    A dim without a listed weight (a rubric outside the scorer's `dims`) weighs 1. The one lookup used by the
    Scorer, the reward function, the evaluation runner and the HTTP client.
    """
    wmap = dict(zip(weight_dims, weights))
    return [float(wmap.get(d, 1.0)) for d in dims]


@dataclass
class Templates:
    """Prompt pieces. `user` is formatted with prompt, dim, rubric, lo, hi; the others are appended verbatim.

    Attributes:
        user: the user turn's text (follows the image).
        direct_prefix: assistant prefix after the generation prompt; the next token is the level (score position).
        reasoning_prefix: assistant prefix before a reasoning chain.
        reasoning_close: appended after a chain; the next token is the level.
        chat_template_kwargs: extra variables for the checkpoint's chat template (e.g. {"enable_thinking": false}
            for Qwen3 / Qwen3.5 templates, which otherwise open a <think> block in the generation prompt).
    """

    user: str = "Prompt: {prompt}\n{rubric}\nRate the image from {lo} to {hi}."
    direct_prefix: str = "Score: "
    reasoning_prefix: str = "Reasoning: "
    reasoning_close: str = "\nScore: "
    chat_template_kwargs: dict = field(default_factory=dict)


@dataclass
class ScorerConfig:
    """Everything `zreward.json` holds.

    Attributes:
        family: zreward family name (see `zreward.models.families`).
        levels: level values, ascending.
        level_strings: the text of each level ("1.0", ...); each must be one token.
        level_token_ids: their token ids (filled/checked at load).
        added_level_tokens: True when the level strings were added to the vocabulary (embeddings resized).
        dims: rubric dimensions, in output order.
        rubrics: dim → rubric text inserted into the prompt.
        templates: prompt templates.
        mode: default scoring mode, "direct", "reasoning", or "yesno" (a RewardDance pairwise yes/no model scored
            against a stored reference image; see `zreward.trainers.rewarddance`).
        reward_weights: per-dim weights of `overall` and `reward` (same order as dims).
        uncertainty_lambda: λ in `mean − λ·std` for `reward` (0 = plain expectation).
        max_new_tokens: reasoning chain length bound.
        temperature: sampling temperature for reasoning chains (used when samples > 1 or do_sample).
        version: format version.
        yesno: mode "yesno" only: question template, answer strings/ids, reference image (base64 PNG).
    """

    family: str
    levels: list[float] = field(default_factory=lambda: list(DEFAULT_LEVELS))
    level_strings: list[str] = field(default_factory=list)
    level_token_ids: list[int] = field(default_factory=list)
    added_level_tokens: bool = False
    dims: list[str] = field(default_factory=lambda: list(DEFAULT_DIMS))
    rubrics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RUBRICS))
    templates: Templates = field(default_factory=Templates)
    mode: str = "direct"
    reward_weights: list[float] = field(default_factory=lambda: list(DEFAULT_WEIGHTS))
    uncertainty_lambda: float = 0.0
    max_new_tokens: int = 32
    temperature: float = 1.0
    version: int = 1
    yesno: dict | None = None

    def __post_init__(self):
        if not self.level_strings and isinstance(self.levels, list) and all(_finite(v) for v in self.levels):
            self.level_strings = [f"{v:.1f}" for v in self.levels]
        self.validate()

    def validate(self, where: str = CONFIG_NAME) -> None:
        """Raise ValueError naming the field when the config is inconsistent (or would give NaN scores)."""
        if (not isinstance(self.levels, list) or len(self.levels) < 2 or not all(_finite(v) for v in self.levels)
                or any(b <= a for a, b in zip(self.levels, self.levels[1:]))):
            raise ValueError(f"{where}: levels: expected ≥ 2 finite, strictly ascending numbers, got {self.levels}")
        w = self.reward_weights
        if not isinstance(w, list) or not all(_finite(x) and x >= 0 for x in w) or not sum(w) > 0:
            raise ValueError(f"{where}: reward_weights: expected finite non-negative numbers with a positive sum, "
                             f"got {w}")
        if not (_finite(self.uncertainty_lambda) and self.uncertainty_lambda >= 0):
            raise ValueError(f"{where}: uncertainty_lambda: expected a finite number ≥ 0, "
                             f"got {self.uncertainty_lambda}")
        if not (_finite(self.temperature) and self.temperature > 0):
            raise ValueError(f"{where}: temperature: expected a finite number > 0, got {self.temperature}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"{where}: max_new_tokens: expected an integer ≥ 1, got {self.max_new_tokens}")
        if len(self.level_strings) != len(self.levels):
            raise ValueError(f"{where}: level_strings: expected {len(self.levels)} strings, got {self.level_strings}")
        if self.level_token_ids and len(self.level_token_ids) != len(self.levels):
            raise ValueError(f"{where}: level_token_ids: expected {len(self.levels)} ids, got {self.level_token_ids}")
        missing = [d for d in self.dims if d not in self.rubrics]
        if missing:
            raise ValueError(f"{where}: rubrics: no rubric text for dims {missing}")
        if len(self.reward_weights) != len(self.dims):
            raise ValueError(f"{where}: reward_weights: expected {len(self.dims)} weights (one per dim {self.dims}), "
                             f"got {self.reward_weights}")
        if self.mode not in ("direct", "reasoning", "yesno"):
            raise ValueError(f"{where}: mode: expected 'direct', 'reasoning' or 'yesno', got {self.mode!r}")
        if self.mode == "yesno":
            need = ["yes_id", "no_id", "reference_png"]
            if not isinstance(self.yesno, dict) or any(k not in self.yesno for k in need):
                raise ValueError(f"{where}: yesno: mode 'yesno' needs a yesno section with {need}")

    def weights_for(self, dims: list[str]) -> list[float]:
        """`reward_weights` of `dims` (see `dim_weights`)."""
        return dim_weights(dims, self.dims, self.reward_weights)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict, where: str = CONFIG_NAME) -> ScorerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; expected a subset of {sorted(known)}")
        if "family" not in d:
            raise ValueError(f"{where}: family: missing (expected one of the zreward family names)")
        d = dict(d)
        if isinstance(d.get("templates"), dict):
            extra = sorted(set(d["templates"]) - {f.name for f in fields(Templates)})
            if extra:
                raise ValueError(f"{where}: templates: unknown fields {extra}")
            d["templates"] = Templates(**d["templates"])
        try:
            cfg = cls(**d)
        except ValueError as e:
            raise ValueError(str(e).replace(CONFIG_NAME, where, 1)) from None
        except TypeError as e:
            raise ValueError(f"{where}: a field has the wrong type ({e})") from None
        cfg.validate(where)
        return cfg

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ScorerConfig:
        path = Path(directory) / CONFIG_NAME
        return cls.from_json(read_config_json(path), where=str(path))


def read_config_json(path: str | Path) -> dict:
    """Read a `zreward.json` file → its object; ValueError naming the file for bad UTF-8, bad JSON or a non-object."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: expected UTF-8 text, invalid byte at offset {e.start}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: expected valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
