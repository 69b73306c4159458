"""Allowed values of typed settings, declared once beside their fields.

A settings dataclass (a config section, `AugmentSpec`, `RecordConfig`) declares
- each field's type, a `Literal[...]` for a choice of values;
- each field's help, and how it appears on the command line, with `setting(default, help)`;
- `LIMITS: ClassVar[dict]`: field -> `Range` for numeric ranges and non-empty strings;
- `CHECKS: ClassVar[tuple]`: (rule, message) pairs relating several of its fields.
`field_problem` and `check_problem` name the first violation; floats must be finite whether
or not a rule names them. Callers word the message for their users (a config key, an option).
The CLI (`pointkd.cli`) builds every option from these declarations.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

MAX_POINTS = 1 << 20  # points per cloud; more is a typo (and would not fit in memory)
# CPU threads for torch (train.threads, --threads): more than 4 per core only slows a run down,
# and torch itself crashes (SIGSEGV) on ~100,000 and overflows past 2**31
MAX_THREADS = 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Range:
    """The allowed values of one field: [low, high] (either end open or absent), a set of
    `choices`, or a non-empty string (`text`). Floats must also be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    text: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if self.choices:
            return None if value in self.choices else \
                "must be one of " + ", ".join(map(str, self.choices))
        if self.text:
            return None if str(value).strip() else "must not be empty"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and (value >= self.high if self.high_open else
                                      value > self.high):
            return f"must be {'<' if self.high_open else '<='} {self.high}"
        return None


SEED = Range(0, 2**32 - 1)  # every seed: numpy's and torch's generators take 32 bits


def choices(hint: Any) -> tuple | None:
    """The values of a `Literal[...]` type (also inside `X | None`), else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for option in typing.get_args(hint):
        if typing.get_origin(option) is Literal:
            return typing.get_args(option)
    return None


def rules(cls: type) -> dict[str, Range]:
    """Every field's rule: its `Literal` choices, else its LIMITS entry, else finiteness."""
    hints = typing.get_type_hints(cls)
    limits = getattr(cls, "LIMITS", {})
    out = {}
    for f in dataclasses.fields(cls):
        values = choices(hints[f.name])
        out[f.name] = Range(choices=values) if values else limits.get(f.name, Range())
    return out


def field_problem(cls: type, values: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(field, why, value) of the first of `values` (fields of `cls`) whose type or rule
    refuses it, or None. None passes where the type allows it; mappings and sequences are
    checked by type (and their items' types) only."""
    hints = typing.get_type_hints(cls)
    for name, rule in rules(cls).items():
        value = values[name]
        why = type_problem(value, hints[name])
        if why is None and not (value is None or isinstance(value, bool | dict | list | tuple)):
            why = rule.problem(value)
        if why:
            return name, why, value
    return None


def type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` is not of the annotated type `hint`, or None: what a settings dataclass
    built in code (not through `config.merge`, which converts) is checked with. An int is a
    number; a bool is neither an int nor a number."""
    origin = typing.get_origin(hint)
    if origin is Literal:  # one of the choices, of the choice's own type (True is not 1)
        allowed = typing.get_args(hint)
        return None if any(value == c and type(value) is type(c) for c in allowed) else \
            "must be one of " + ", ".join(map(str, allowed))
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = [type_problem(value, o) for o in options if o is not type(None)]
        return None if None in problems else problems[0]
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            "must be an integer"
    if hint is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else \
            "must be a number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if hint is dict or origin is dict:
        return None if isinstance(value, dict) else "must be a mapping"
    if origin is list:
        if not isinstance(value, list):
            return "must be a list"
        (item,) = typing.get_args(hint)
        bad = next((why for v in value if (why := type_problem(v, item))), None)
        return None if bad is None else \
            f"must be a list ({bad.replace('must', 'each item must', 1)})"
    if isinstance(hint, type) and not isinstance(value, hint):
        return f"must be a {hint.__name__}"
    return None


def check_problem(cls: type, values: dict[str, Any]) -> str | None:
    """The message of the first of `cls`'s cross-field CHECKS that `values` fail, or None."""
    obj = types.SimpleNamespace(**values)
    for rule, message in getattr(cls, "CHECKS", ()):
        if not rule(obj):
            return message
    return None


def field_values(obj: Any) -> dict[str, Any]:
    """A dataclass instance's own fields (not nested into dicts, unlike `asdict`)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def check_settings(obj: Any, label: Callable[[str], str], error: type[Exception]) -> None:
    """Raise `error` for the first rule `obj` breaks: "<label(field)> <why>, got <value>" for
    a field, a CHECKS message as it is."""
    values = field_values(obj)
    bad = field_problem(type(obj), values)
    if bad:
        name, why, value = bad
        raise error(f"{label(name)} {why}, got {value!r}")
    message = check_problem(type(obj), values)
    if message:
        raise error(message)


def option(name: str) -> str:
    """A field's command-line option: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            default_factory: Any = dataclasses.MISSING,
            flag: str | tuple[str, ...] | dict[str, str] | None = None,
            positional: bool = False, repeat: bool = False, nargs: str | None = None,
            metavar: str | None = None, cli: bool = True, rest: str | None = None,
            from_cli: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field with its help and its command-line form, declared once:

    - `help`: one line for `--help` (the CLI appends the default);
    - `flag`: the option(s) instead of `option(name)` (`("--classes", "--num-classes")`); a
      dict {command: flag} gives each command its own (a `RunConfig` shortcut);
    - `positional`: an argument, not an option (a list: one or more, none with a default);
    - `repeat`: a list given as a repeated option (`--teacher A --teacher B`); `nargs`: a list
      given after one option (`--split train test`);
    - `cli=False`: not on the command line (a Python argument only);
    - `rest`: with `repeat`, the first value is this field's and the others the list field
      `rest` (`--records A --records B`: distill.records, distill.extra_records);
    - `from_cli`: the field's value from the option's text (a YAML path for an `AugmentSpec`).
    A `bool` defaulting to True is turned off by `--no-<name>`."""
    metadata = {"help": help, "cli": cli, "flag": flag, "positional": positional,
                "repeat": repeat, "nargs": nargs, "metavar": metavar, "rest": rest,
                "from_cli": from_cli}
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata=metadata)


def help_of(f: dataclasses.Field) -> str:
    """A field's declared help ("" if it has none)."""
    return f.metadata.get("help", "")


def flags(f: dataclasses.Field, command: str | None = None) -> tuple[str, ...]:
    """A field's command-line option(s): the declared flag (for `command`, where declared per
    command), else `option(name)`, `--no-<name>` for a bool that is on by default; () for a
    positional argument or a field not on the command line."""
    meta = f.metadata
    if not meta.get("cli", True) or meta.get("positional"):
        return ()
    flag = meta.get("flag")
    if isinstance(flag, dict):
        flag = flag.get(command) if command is not None else next(iter(flag.values()))
        if flag is None:
            return ()
    if flag:
        return (flag,) if isinstance(flag, str) else tuple(flag)
    if f.default is True:
        return (option("no_" + f.name),)
    return (option(f.name),)


def label(cls: type) -> Callable[[str], str]:
    """`check_settings` label naming a field of `cls` as the user gave it: its option
    (`--teacher`), or its argument's name (`checkpoint`)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}

    def name_of(name: str) -> str:
        f = by_name[name]
        found = flags(f)
        if found:
            return found[0]
        if f.metadata.get("positional"):
            return f.metadata.get("metavar") or name
        return option(name)

    return name_of
