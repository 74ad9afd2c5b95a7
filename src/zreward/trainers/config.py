"""Trainer configuration: nested dataclasses are the schema, YAML files and `a.b=c` overrides only override.

Implements the lingua-style scheme (facebookresearch/lingua `args.py`), without OmegaConf:

* a trainer's `Config` is a tree of dataclasses; every field has a default (nested ones via `default_factory`)
  and optional help text in `field(metadata={"help": ...})`;
* `load_config(Config, yaml_path, overrides)` starts from the defaults, applies the YAML file, then the
  command-line dotlist (`optim.lr=1e-4 data.dims=[alignment,realism] ckpt.keep_last=null`) - later wins;
* values are parsed with YAML scalar typing (ints, floats incl. `1e-4`, bools true/false, `null`, `[1, 2]` lists,
  `{a: 1}` mappings) and checked against the field's annotation; a field typed `str` takes the raw text of a
  command-line value, so `name=007` stays the string "007";
* mappings merge into nested dataclasses and into `dict[...]` fields key by key (like OmegaConf merge);
  lists and scalars replace;
* unknown keys and wrong types raise `ConfigError` naming the source (file or "command line"), the key path,
  the expected type and the value; duplicate keys in a YAML file are an error too;
* `dump_config` writes the resolved config as YAML that `load_config` reads back to an equal object;
* `parse_cli` is the whole `--config FILE [a.b=c ...] [--help]` front end a trainer's `main(argv)` needs.

Supported annotations: bool, int, float (ints accepted), str, pathlib.Path, Literal[...], X | None / Optional,
unions, list[T], tuple[T, ...], tuple[A, B], dict[str, T], Any, and dataclasses as fields (`D` or `D | None`;
not inside lists or dicts).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from zreward.atomic import atomic_write_text

T = TypeVar("T")
CMDLINE = "command line"


class ConfigError(ValueError):
    """A config file or override does not fit the schema; the message names source, key and expectation."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars where 1.1 surprises: `1e-4` is a float (1.1 wants `1.0e-4`), only
    true/false are booleans (not yes/no/on/off); duplicate mapping keys are an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML hook
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in "-+0123456789.":
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, []) if tag != "tag:yaml.org,2002:float"
    ]
# YAML 1.2 booleans: only true/false (any case). YAML 1.1 also reads yes/no/on/off as bools, which turns
# `mixed_precision: no` into False.
for _ch in "yYnNoO":
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, []) if tag != "tag:yaml.org,2002:bool"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text with zreward's loader; errors name `source`."""
    try:
        return yaml.load(text, Loader=_Loader)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None


# ---------------------------------------------------------------------------------------------------- typing


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations that `from __future__ import annotations` leaves behind.
    return typing.get_type_hints(cls)


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, raw: str | None, current: Any = None) -> Any:
    """Return `value` converted to annotation `tp`, or raise _Mismatch. `raw` is the command-line text."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, raw, current)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if raw is not None and raw in args:
            return raw
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if raw is not None:
            return raw
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if raw is not None:
            return Path(raw)
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Mismatch
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is list:
            return [_coerce(v, args[0] if args else Any, None) for v in value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], None) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch
        return tuple(_coerce(v, a, None) for v, a in zip(value, args)) if args else tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        k_tp, v_tp = args if args else (Any, Any)
        new = {_coerce(k, k_tp, None): _coerce(v, v_tp, None) for k, v in value.items()}
        return {**current, **new} if isinstance(current, dict) else new
    if dataclasses.is_dataclass(tp):
        raise _Mismatch  # mappings into dataclasses go through _merge; anything else does not fit
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    raise TypeError(f"zreward config: unsupported annotation {tp!r}")


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type inside `tp` (itself, or `D | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        dcs = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return dcs[0] if len(dcs) == 1 else None
    return None


def _merge(obj: Any, data: Any, source: str, prefix: str, raws: dict[str, str]) -> Any:
    """Return a copy of dataclass `obj` with mapping `data` applied (recursively, type-checked)."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping of {type(obj).__name__} fields, "
                          f"got {data!r} ({type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(obj) if f.init}
    hints = _hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {path!r}; {type(obj).__name__} has: {', '.join(fields)}")
        tp, current = hints[key], getattr(obj, key)
        sub = _dataclass_in(tp)
        if sub is not None and isinstance(value, dict):
            base = current if dataclasses.is_dataclass(current) else _defaults(sub, f"{source}: {path}")
            changes[key] = _merge(base, value, source, path + ".", raws)
            continue
        try:
            changes[key] = _coerce(value, tp, raws.get(path), current)
        except _Mismatch:
            raise ConfigError(f"{source}: {path}: expected {_type_name(tp)}, got {value!r} "
                              f"({type(value).__name__})") from None
    try:
        return dataclasses.replace(obj, **changes)
    except (ValueError, TypeError) as e:  # a __post_init__ check of the dataclass itself
        raise ConfigError(f"{source}: {where}: {e}") from None


def _defaults(cls: type[T], what: str) -> T:
    try:
        return cls()
    except TypeError as e:
        raise TypeError(f"{what}: config dataclass {cls.__name__} needs defaults for every field ({e})") from None


# ------------------------------------------------------------------------------------------------ public API


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Turn `["a.b=1", "c=[x, y]"]` into a nested mapping and a {"a.b": raw text} table.

    Raises:
        ConfigError: an item without `=` or with an empty key part.
    """
    tree: dict[str, Any] = {}
    raws: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"{CMDLINE}: override {item!r} must look like key.path=value")
        value = parse_yaml(text, f"{CMDLINE}: {key}") if text.strip() else None
        node = tree
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{CMDLINE}: override {item!r} conflicts with an earlier override of {part!r}")
            node = nxt
        node[parts[-1]] = value
        raws[key] = text
    return tree, raws


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a config: dataclass defaults < YAML file < `a.b=c` overrides (applied in order).

    Args:
        cls: the root config dataclass; every field must have a default.
        yaml_path: optional YAML file with a mapping that mirrors the dataclass tree.
        overrides: dotlist items `key.path=value`, values in YAML syntax.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type, or a dataclass `__post_init__` check failing.
    """
    cfg = _defaults(cls, cls.__name__)
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e}") from None
        data = parse_yaml(text, str(path))
        cfg = _merge(cfg, {} if data is None else data, str(path), "", {})
    for item in overrides or []:
        # One at a time, so a later override of the same key wins and errors name the item.
        tree, raws = parse_overrides([item])
        cfg = _merge(cfg, tree, CMDLINE, "", raws)
    return cfg


def config_to_dict(cfg: Any) -> Any:
    """A plain YAML/JSON-able tree of `cfg` (Paths as str, tuples as lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, os.PathLike):
        return os.fspath(cfg)
    return cfg


def dump_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); `load_config(type(cfg), path)` gives it back."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return atomic_write_text(Path(path), text)


def config_help(cls: type, prefix: str = "") -> str:
    """One line per leaf field: `key.path (type, default X): help`, nested dataclasses expanded."""
    lines: list[str] = []
    defaults = _defaults(cls, cls.__name__)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        sub = _dataclass_in(tp)
        help_text = f.metadata.get("help", "")
        if sub is not None and dataclasses.is_dataclass(getattr(defaults, f.name)):
            if help_text:
                lines.append(f"  {prefix}{f.name}.*: {help_text}")
            lines.append(config_help(sub, f"{prefix}{f.name}."))
            continue
        default = yaml.safe_dump(config_to_dict(getattr(defaults, f.name)), default_flow_style=True).strip()
        default = default.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, default {default})" + (f": {help_text}" if help_text else ""))
    return "\n".join(lines)


def parse_cli(cls: type[T], argv: list[str], prog: str, description: str = "") -> T:
    """The `[--config FILE] [key.path=value ...] [--help]` front end for a trainer's `main(argv)`.

    Prints help and raises SystemExit(0) on -h/--help; prints the error and raises SystemExit(2) on bad
    arguments or a config error (argparse's convention).
    """
    usage = f"usage: {prog} [--config FILE] [key.path=value ...]"
    yaml_path: str | None = None
    overrides: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            print("\n".join(x for x in (usage, description, "", "config fields:", config_help(cls)) if x is not None))
            raise SystemExit(0)
        if arg == "--config" or arg.startswith("--config="):
            yaml_path = arg.partition("=")[2] if "=" in arg else next(it, None)
            if not yaml_path:
                print(f"{usage}\n{prog}: error: --config needs a file", file=sys.stderr)
                raise SystemExit(2)
        elif arg.startswith("-"):
            print(f"{usage}\n{prog}: error: unknown option {arg!r} (overrides are key.path=value)", file=sys.stderr)
            raise SystemExit(2)
        else:
            overrides.append(arg)
    try:
        return load_config(cls, yaml_path, overrides)
    except ConfigError as e:
        print(f"{prog}: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
