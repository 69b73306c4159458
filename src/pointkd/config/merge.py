"""Merging YAML values and overrides into a config dataclass: keys checked against the
fields, values against the annotated types (naming the key on failure), frozen sections
built once everything is in, then every field's rule and every section's CHECKS."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pointkd import safe_io
from pointkd.config.limits import (
    check_problem,
    field_problem,
    field_values,
    type_problem,
)
from pointkd.errors import ConfigError


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """`value` checked against its annotated type (`limits.type_problem`; of a `Literal`, the
    type of its values: which value, `validate` checks), naming `key` (a list item as
    `key[i]`) on failure; an int for a float becomes a float, a mapping or list a copy."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        typ, origin = type(typing.get_args(typ)[0]), None
    if origin in (typing.Union, types.UnionType):
        fits = [t for t in typing.get_args(typ) if type_problem(value, t) is None]
        if not fits:
            raise ConfigError(f"config key '{key}': {value!r} is not a valid {typ}")
        return _coerce(value, fits[0], key)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(typ)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    why = type_problem(value, typ)
    if why:
        raise ConfigError(f"config key '{key}': {why}, got {value!r}")
    if typ is float:
        return float(value)
    return dict(value) if isinstance(value, dict) else value


@dataclass
class _Draft:
    """A frozen section (the augmentation spec) while a config is being merged: its values so
    far. `_finish` checks and builds it once every file and override is in, so overrides may
    pass through states its own checks refuse (scale_low=2 before scale_high=3)."""

    cls: type
    values: types.SimpleNamespace


def _merge(obj: Any, values: dict, prefix: str = "", cls: type | None = None) -> None:
    """Merge a nested mapping into a dataclass instance (or the values of a `_Draft` of
    dataclass `cls`) in place, validating keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    cls = cls or type(obj)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and current.__dataclass_params__.frozen:
            current = _Draft(type(current), types.SimpleNamespace(**field_values(current)))
            setattr(obj, key, current)
        if isinstance(current, _Draft):
            _merge(current.values, value, f"{full}.", current.cls)
        elif dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _finish(cfg: Any) -> Any:
    """Build the frozen sections merged into `cfg`, each checked first (with the config key
    in the message; the section's own checks would not name it)."""
    for f in dataclasses.fields(cfg):
        draft = getattr(cfg, f.name)
        if isinstance(draft, _Draft):
            values = vars(draft.values)
            _check_section(draft.cls, values, f"{f.name}.")
            setattr(cfg, f.name, draft.cls(**values))
    return cfg


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def validate(cfg: Any) -> None:
    """Every section's fields against their rules (`pointkd.limits`: Literal choices and
    LIMITS; floats must be finite everywhere), then every section's cross-field CHECKS."""
    sections = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    sections = [(name, value) for name, value in sections if dataclasses.is_dataclass(value)]
    for name, section in sections:
        _check_fields(type(section), field_values(section), f"{name}.")
    for _, section in [*sections, ("", cfg)]:
        message = check_problem(type(section), field_values(section))
        if message:
            raise ConfigError(message)


def _check_fields(cls: type, values: dict, prefix: str) -> None:
    bad = field_problem(cls, values)
    if bad:
        name, why, value = bad
        raise ConfigError(f"config key '{prefix}{name}' {why}, got {value!r}")


def _check_section(cls: type, values: dict, prefix: str) -> None:
    """A section's fields, then its cross-field checks."""
    _check_fields(cls, values, prefix)
    message = check_problem(cls, values)
    if message:
        raise ConfigError(message)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """`config.yaml` of a run, replaced atomically and never through a link."""
    safe_io.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
