"""Typed run configs: dataclasses loaded from YAML / JSON, overridden by `key=value` on the command line.

    @dataclass
    class MotionRun:
        model: NetConfig = field(default_factory=NetConfig)
        train: TrainConfig = field(default_factory=TrainConfig)

    cfg = load_config(MotionRun, "run.yaml", ["train.lr=3e-4", "train.steps=2000"])
    save_config(cfg, "out/train.yaml")

The dataclass is the schema: every value read from a file or an override is coerced to its field's
type (int, float, bool, str, Path, Literal, Optional, list / tuple / dict of those, nested dataclasses),
and an unknown key or a value that does not fit raises one `ConfigError` naming the key, what was
expected, and the valid keys. Override values are parsed as YAML scalars / flow lists (`[1, 2]`,
`null`, `true`), except for plain `str` fields, which take the text as written.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .runtime import atomic_write


class ConfigError(ValueError):
    """A config file, key or value that does not fit the config dataclass."""


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def leaf_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key a config class accepts (nested dataclasses expanded)."""
    keys = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += leaf_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _coerce(value, tp, where: str):
    """`value` converted to type `tp`, or a ConfigError saying what `where` expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected=None):
        return ConfigError(f"{where}: expected {expected or _type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise bad(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise bad("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad(f"a mapping of {_type_name(tp)} keys ({', '.join(leaf_keys(tp))})")
        return from_dict(tp, value, prefix=f"{where}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise bad("bool (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                raise bad() from None
            if f.is_integer():
                return int(f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" as a string
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise bad("a path")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list ({_type_name(tp)})")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad(f"{len(args)} values ({_type_name(tp)})")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, where): _coerce(v, vtp, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: field type {_type_name(tp)} is not supported by polydiff configs")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build `cls` from a (nested) mapping; unknown or missing keys raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; valid keys: "
                          + ", ".join(leaf_keys(cls, prefix)))
    kwargs = {}
    for name, f in names.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {prefix + name!r} ({_type_name(hints[name])})")
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.lr=1e-4)")
    return key.strip().split("."), raw


def apply_overrides(cfg, overrides) -> Any:
    """A copy of dataclass instance `cfg` with `key=value` overrides (dotted keys) applied."""
    for text in overrides or ():
        path, raw = _parse_override(text)
        cfg = _set(cfg, path, raw, type(cfg), full=".".join(path))
    return cfg


def _set(obj, path: list[str], raw: str, root_cls, full: str):
    hints = _hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    head = path[0]
    if head not in names:
        raise ConfigError(f"unknown config key {full!r}; valid keys: {', '.join(leaf_keys(root_cls))}")
    tp = hints[head]
    if len(path) > 1:
        child = getattr(obj, head)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"unknown config key {full!r}: {head!r} has no sub-keys; "
                              f"valid keys: {', '.join(leaf_keys(root_cls))}")
        return dataclasses.replace(obj, **{head: _set(child, path[1:], raw, root_cls, full)})
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{full!r} is a group; set one of its keys: {', '.join(leaf_keys(tp, full + '.'))}")
    if tp is str or tp is Path:
        value = raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
    return dataclasses.replace(obj, **{head: _coerce(value, tp, full)})


def read_file(path) -> dict:
    """The mapping in a .yaml / .yml / .json file; a clear ConfigError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .yaml, .yml or .json")
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()} ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls, path=None, overrides=()):
    """`cls` from defaults, then the file at `path` (if any), then `key=value` overrides."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    try:
        cfg = from_dict(cls, read_file(path)) if path is not None else cls()
    except TypeError as err:  # a required field without a default, and no file
        raise ConfigError(f"{cls.__name__}: {err}; give it in the config file or as key=value") from err
    except ConfigError as err:
        if path is not None and str(path) not in str(err):
            raise ConfigError(f"{path}: {err}") from None
        raise
    return apply_overrides(cfg, overrides)


def to_dict(cfg) -> dict:
    """Plain JSON/YAML-able mapping of a config (Paths as strings, tuples as lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def save_config(cfg, path) -> Path:
    """Write `cfg` as YAML (.yaml/.yml) or JSON (.json), atomically."""
    path = Path(path)
    data = to_dict(cfg)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    elif path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .yaml, .yml or .json")
    return atomic_write(path, lambda tmp: tmp.write_text(text))
