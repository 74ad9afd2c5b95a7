"""Config plumbing: defaults < YAML < dotlist, YAML scalar typing, clear errors, dump round trip, help, CLI."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from zreward.trainers.config import ConfigError, config_help, dump_config, load_config, parse_cli


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass
class Data:
    dims: list[str] = field(default_factory=lambda: ["alignment"])
    weights: dict[str, float] = field(default_factory=lambda: {"alignment": 1.0})
    root: Path | None = None


@dataclass
class Cfg:
    name: str = "run"
    steps: int = field(default=10, metadata={"help": "optimizer steps"})
    bf16: bool = False
    warmup: int | None = None
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_only():
    assert load_config(Cfg) == Cfg()


def test_precedence_defaults_yaml_dotlist(tmp_path):
    p = _yaml(tmp_path, "steps: 20\noptim:\n  lr: 5e-4\n  schedule: constant\nname: from_yaml\n")
    cfg = load_config(Cfg, p, ["optim.lr=2e-5", "bf16=true"])
    assert cfg.steps == 20                       # YAML over default
    assert cfg.optim.lr == 2e-5                  # dotlist over YAML
    assert cfg.optim.schedule == "constant"      # YAML kept where dotlist is silent
    assert cfg.optim.betas == (0.9, 0.999)       # default kept inside a partly overridden section
    assert cfg.name == "from_yaml" and cfg.bf16 is True
    # the later of two overrides of the same key wins
    assert load_config(Cfg, p, ["steps=1", "steps=2"]).steps == 2


def test_yaml_scalar_typing_on_command_line():
    cfg = load_config(Cfg, None, [
        "steps=3", "optim.lr=1e-4", "warmup=null", "data.dims=[realism, aesthetics]",
        "optim.betas=[0.5, 1]", "data.weights.realism=2", "data.root=/tmp/x", "name=007"])
    assert cfg.steps == 3 and isinstance(cfg.steps, int)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)   # PyYAML alone reads "1e-4" as a string
    assert cfg.optim.betas == (0.5, 1.0) and isinstance(cfg.optim.betas[1], float)
    assert cfg.warmup is None
    assert cfg.data.dims == ["realism", "aesthetics"]
    assert cfg.data.weights == {"alignment": 1.0, "realism": 2.0}       # dict fields merge key by key
    assert cfg.data.root == Path("/tmp/x")
    assert cfg.name == "007"                                           # str fields take the raw text


@pytest.mark.parametrize("override, needle", [
    (["optim.lrr=1"], "command line: unknown key 'optim.lrr'"),
    (["nope=1"], "command line: unknown key 'nope'"),
    (["steps=1.5"], "command line: steps: expected int, got 1.5 (float)"),
    (["bf16=1"], "command line: bf16: expected bool, got 1 (int)"),
    (["optim.lr=fast"], "command line: optim.lr: expected float, got 'fast' (str)"),
    (["optim.schedule=linear"], "optim.schedule: expected Literal['cosine', 'constant'], got 'linear'"),
    (["optim.betas=[1, 2, 3]"], "optim.betas: expected tuple[float, float]"),
    (["optim=3"], "command line: optim: expected Optim, got 3 (int)"),
    (["steps"], "must look like key.path=value"),
    (["steps=-1"], "steps must be >= 0, got -1"),
])
def test_dotlist_errors(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, override)
    assert needle in str(e.value)


def test_yaml_errors_name_the_file(tmp_path):
    p = _yaml(tmp_path, "optim:\n  lr: 1e-3\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=rf"{p}: unknown key 'optim.momentum'"):
        load_config(Cfg, p)
    p = _yaml(tmp_path, "steps: ten\n")
    with pytest.raises(ConfigError, match=rf"{p}: steps: expected int, got 'ten' \(str\)"):
        load_config(Cfg, p)
    p = _yaml(tmp_path, "name: 7\n")  # in a file, a str field wants a string (quote it)
    with pytest.raises(ConfigError, match="name: expected str, got 7"):
        load_config(Cfg, p)
    p = _yaml(tmp_path, "steps: 1\nsteps: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        load_config(Cfg, p)
    p = _yaml(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of Cfg fields"):
        load_config(Cfg, p)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Cfg, tmp_path / "missing.yaml")
    assert load_config(Cfg, _yaml(tmp_path, "")) == Cfg()  # an empty file overrides nothing


def test_dump_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["optim.lr=3e-7", "data.root=/data", "warmup=5", "data.weights.x=0.5"])
    path = dump_config(cfg, tmp_path / "resolved.yaml")
    text = path.read_text()
    assert "lr: 3.0e-07" in text and "root: /data" in text
    assert load_config(Cfg, path) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_config_help_lists_leaves_with_help():
    text = config_help(Cfg)
    assert "  optim.lr (float, default 0.001): peak learning rate" in text
    assert "  steps (int, default 10): optimizer steps" in text
    assert "data.weights (dict[str, float], default {alignment: 1.0})" in text


def test_parse_cli(tmp_path, capsys):
    p = _yaml(tmp_path, "steps: 4\n")
    assert parse_cli(Cfg, ["--config", str(p), "bf16=true"], "prog").steps == 4
    assert parse_cli(Cfg, [f"--config={p}"], "prog").steps == 4
    with pytest.raises(SystemExit) as e:
        parse_cli(Cfg, ["--help"], "zreward train x")
    assert e.value.code == 0 and "optim.lr (float" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        parse_cli(Cfg, ["steps=x"], "prog")
    assert e.value.code == 2 and "steps: expected int" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse_cli(Cfg, ["--lr", "1"], "prog")
    assert e.value.code == 2 and "unknown option '--lr'" in capsys.readouterr().err


def test_yaml_1_2_booleans(tmp_path):
    @dataclass
    class Mp:
        mixed_precision: str = "bf16"
        flag: bool = False

    # YAML 1.1 would read `no` as False; zreward's loader keeps it a string (only true/false are booleans)
    assert load_config(Mp, _yaml(tmp_path, "mixed_precision: no\nflag: True\n")) == Mp("no", True)
    with pytest.raises(ConfigError, match="flag: expected bool, got 'yes'"):
        load_config(Mp, None, ["flag=yes"])
