"""Config rules tested from their declarations, not from examples: every field of every
settings class (the sections of `RunConfig`, `AugmentSpec`, and every class of
`pointkd.config.stages` with a `check()`: `RecordConfig`, `EvalConfig`, ...) is visited
through `pointkd.config.limits.rules`, and every value just outside its rule must be refused
with a one-line error naming it (the config key `'train.epochs'`, the option `--k`), every
value on the allowed side of a bound accepted. Every cross-field CHECK is broken once by a
table below; a CHECK without an entry fails the suite. A new field, bound or choice is tested
the moment it is declared."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import pytest
import yaml

import pointkd.config.stages as stages
from pointkd.config import limits
from pointkd.config.files import parse_override
from pointkd.config.limits import Range, check_problem, choices, field_values, option, rules
from pointkd.config.run import DistillConfig, OptimConfig, RunConfig, load_config
from pointkd.config.stages import EvalConfig, RecordConfig
from pointkd.config.types import AugmentSpec
from pointkd.errors import ConfigError, RecordError

BASE = ["data.path=synthetic"]  # a run names its data; every load below starts from it

RUN_HINTS = typing.get_type_hints(RunConfig)
SECTIONS: dict[str, type] = {f.name: RUN_HINTS[f.name] for f in dataclasses.fields(RunConfig)
                             if dataclasses.is_dataclass(RUN_HINTS[f.name])}
ROOT_FIELDS = [f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]

# every settings class of the other commands; those with a `check()` (and `AugmentSpec`,
# checked as it is built) are tested through it, the others' CHECKS through `check_problem`
STAGE_CLASSES = [c for c in vars(stages).values() if isinstance(c, type)
                 and dataclasses.is_dataclass(c) and c.__module__ == stages.__name__]
CHECKED = [c for c in STAGE_CLASSES if callable(getattr(c, "check", None))] + [AugmentSpec]
CONFIG_CLASSES = list(dict.fromkeys([RunConfig, *SECTIONS.values(), *STAGE_CLASSES]))
DIRECT_ERROR: dict[type, type[Exception]] = {RecordConfig: RecordError}  # else ConfigError


def label(cls: type) -> Callable[[str], str]:
    """How `cls`'s check names a field: its option (`--k`; the declared flag or argument
    name where `limits.label` exists), the spec's own wording for `AugmentSpec`."""
    if cls is AugmentSpec:
        return lambda name: f"bad augmentation spec: {name}"
    return limits.label(cls) if hasattr(limits, "label") else option


def required(cls: type) -> dict[str, Any]:
    """Valid values of the fields `cls` has no default for: a name, a list of one."""
    return {f.name: ["x.pt"] if typing.get_origin(hints(cls)[f.name]) is list else "x"
            for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING}

# Other fields that keep a class's CHECKS true while one field takes an allowed value, so
# only the rule under test can fail: (class, field) -> value -> {other field: value}.
COMPANIONS: dict[tuple[type, str], Callable[[Any], dict[str, Any]]] = {
    (OptimConfig, "lr"): lambda v: {"min_lr": 0.0},  # optim.min_lr <= optim.lr
    (OptimConfig, "min_lr"): lambda v: {"lr": max(v, 1e-3)},
    (AugmentSpec, "scale_low"): lambda v: {"scale_high": max(v, 1.5)},  # low <= high
    (AugmentSpec, "scale_high"): lambda v: {"scale_low": min(v, 2 / 3)},
    # teacher_votes > 0 is for online KD, which needs a teacher
    (DistillConfig, "teacher_votes"): lambda v: {"online": True, "teacher": "t.pt"} if v else {},
}


# --- types and values ---------------------------------------------------------------------


def hints(cls: type) -> dict[str, Any]:
    return {name: hint for name, hint in typing.get_type_hints(cls).items()
            if name in {f.name for f in dataclasses.fields(cls)}}


def kinds(hint: Any) -> set[type]:
    """The Python types a value of `hint` may have (a Literal's: its values' type)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(kinds(h) for h in typing.get_args(hint)))
    if typing.get_origin(hint) is Literal:
        return {type(v) for v in typing.get_args(hint)}
    return {typing.get_origin(hint) or hint}


def accepts(hint: Any, value: Any) -> bool:
    """Whether `value` has a type `hint` allows (an int is a float; a bool is no int)."""
    allowed = kinds(hint)
    if type(value) is int and float in allowed:
        return True
    return type(value) in allowed or any(
        dataclasses.is_dataclass(k) and isinstance(value, k) for k in allowed)


def integral(hint: Any) -> bool:
    return kinds(hint) - {type(None)} == {int}


def is_float(hint: Any) -> bool:
    return float in kinds(hint)


def numeric(rule: Range) -> bool:
    return rule.low is not None or rule.high is not None


def text(value: Any) -> str:
    """`value` as the right-hand side of an override, which parses back to it exactly."""
    out = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    out = out.removesuffix("\n").removesuffix("\n...")
    parsed = parse_override(f"k={out}")[1]
    assert type(parsed) is type(value) and (parsed == value or parsed != parsed), (value, out)
    return out


def edges(rule: Range, whole: bool) -> tuple[list, list]:
    """(refused, allowed): each bound's nearest value outside, and the bound itself (when
    closed) with its nearest value inside."""
    down = (lambda x: x - 1) if whole else (lambda x: math.nextafter(x, -math.inf))
    up = (lambda x: x + 1) if whole else (lambda x: math.nextafter(x, math.inf))
    cast = int if whole else float
    bad, good = [], []
    if rule.low is not None:
        low = cast(rule.low)
        bad.append(low if rule.low_open else down(low))
        good += [up(low)] if rule.low_open else [low, up(low)]
    if rule.high is not None:
        high = cast(rule.high)
        bad.append(high if rule.high_open else up(high))
        good += [down(high)] if rule.high_open else [high, down(high)]
    assert all(rule.problem(v) for v in bad), (rule, bad)
    good = [v for v in dict.fromkeys(good) if rule.problem(v) is None]
    return bad, good


def outside(values: tuple) -> list:
    """Values of the choices' type that are none of them."""
    if all(type(v) is int for v in values):
        return [min(values) - 1, max(values) + 1]
    return ["nosuch", str(values[0]).upper() if str(values[0]).upper() not in values else "X"]


WRONG_TYPES = [True, 3, 1.5, "abc", [1], {"a": 1}]  # one value of each YAML kind


def with_companions(cls: type, name: str, value: Any) -> dict[str, Any]:
    """`{name: value}` and, when its own rule allows it, the companions keeping CHECKS true."""
    make = COMPANIONS.get((cls, name))
    return {**(make(value) if make and allowed(cls, name, value) else {}), name: value}


def allowed(cls: type, name: str, value: Any) -> bool:
    """Whether a field's type and rule allow `value` (None and containers: the type only)."""
    if not accepts(hints(cls)[name], value):
        return False
    if value is None or isinstance(value, bool | dict | list | tuple):
        return True
    return rules(cls)[name].problem(value) is None


# --- the cases, derived from the declarations ---------------------------------------------


KINDS = ("range_bad", "range_good", "finite", "choice_bad", "choice_good", "text_bad",
         "text_good", "wrong_type", "list_item", "null")


def field_cases(cls: type) -> list[tuple[str, str, Any, str | None]]:
    """(kind, field, value, reason refused) for every field of `cls`, from its rule and type:
    each bound's edges, nan and +-inf for a float, values outside and inside a Literal's
    choices, blank text, null where the type allows it, a value of each wrong type."""
    out = []
    h = hints(cls)
    for name, rule in rules(cls).items():
        def add(kind: str, value: Any, name: str = name, rule: Range = rule) -> None:
            refused = kind in ("range_bad", "finite", "choice_bad", "text_bad")
            out.append((kind, name, value, rule.problem(value) if refused else None))

        if numeric(rule):
            bad, good = edges(rule, integral(h[name]))
            for v in bad:
                add("range_bad", v)
            for v in good:
                add("range_good", v)
        if is_float(h[name]):
            for v in (math.nan, math.inf, -math.inf):
                add("finite", v)
        if rule.choices:
            for v in outside(rule.choices):
                add("choice_bad", v)
            for v in rule.choices:
                add("choice_good", v)
        if rule.text:
            for v in ("", "  "):
                add("text_bad", v)
            add("text_good", "x")
        if type(None) in kinds(h[name]):
            add("null", None)
        if typing.get_origin(h[name]) is list:
            (item,) = typing.get_args(h[name])
            add("list_item", [next(v for v in WRONG_TYPES if not accepts(item, v))])
        for v in WRONG_TYPES:
            if not accepts(h[name], v):
                add("wrong_type", v)
    return out


def run_cases() -> dict[str, list]:
    """Every run-config case by kind: pytest params (section, field, value, reason), each
    with the override as its id (`train.epochs=0`). Root fields (`out`): types only."""
    out: dict[str, list] = {kind: [] for kind in KINDS}
    for section, cls in SECTIONS.items():
        for kind, name, value, why in field_cases(cls):
            out[kind].append(pytest.param(section, name, value, why,
                                          id=f"{section}.{name}={text(value)}"))
    for kind, name, value, why in field_cases(RunConfig):
        if kind == "wrong_type" and name in ROOT_FIELDS:
            out[kind].append(pytest.param("", name, value, why, id=f"{name}={text(value)}"))
    return out


def direct_cases() -> dict[str, list]:
    """The same for the settings checked by their own code: (class, field, value, reason),
    `RecordConfig:--k=0`. A null passes wherever the type allows it."""
    out: dict[str, list] = {kind: [] for kind in KINDS}
    for cls in CHECKED:
        for kind, name, value, why in field_cases(cls):
            kind = "choice_good" if kind == "null" else kind
            out[kind].append(pytest.param(cls, name, value, why,
                                          id=f"{cls.__name__}:{label(cls)(name)}={value!r}"))
    return out


RUN = run_cases()
DIRECT = direct_cases()


def overrides(section: str, name: str, value: Any) -> list[str]:
    cls = SECTIONS[section] if section else RunConfig
    values = with_companions(cls, name, value) if section else {name: value}
    prefix = f"{section}." if section else ""
    return [*BASE, *(f"{prefix}{k}={text(v)}" for k, v in values.items())]


def config_error(args: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(None, args)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def build(cls: type, values: dict[str, Any]) -> Any:
    """A `cls` of the required arguments and `values`, checked as its stage checks it."""
    obj = cls(**{**required(cls), **values})
    if hasattr(obj, "check"):
        obj.check()
    return obj


def direct_error(cls: type, name: str, value: Any) -> str:
    with pytest.raises(DIRECT_ERROR.get(cls, ConfigError)) as caught:
        build(cls, with_companions(cls, name, value))
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{label(cls)(name)} "), message
    return message


# --- run config (load_config with section.key=value overrides) ---------------------------

PARAMS = "section, name, value, why"


@pytest.mark.parametrize(PARAMS, RUN["range_bad"] + RUN["finite"] + RUN["choice_bad"]
                         + RUN["text_bad"])
def test_run_config_refuses_a_value_its_rule_refuses(section, name, value, why):
    message = config_error(overrides(section, name, value))
    assert f"config key '{section}.{name}' {why}, got {value!r}" == message


@pytest.mark.parametrize(PARAMS, RUN["range_good"] + RUN["choice_good"] + RUN["text_good"]
                         + RUN["null"])
def test_run_config_accepts_a_value_its_rule_allows(section, name, value, why):
    got = getattr(getattr(load_config(None, overrides(section, name, value)), section), name)
    assert type(got) is type(value) and got == value


@pytest.mark.parametrize(PARAMS, RUN["wrong_type"])
def test_run_config_refuses_a_value_of_the_wrong_type(section, name, value, why):
    key = f"{section}.{name}" if section else name
    assert f"config key '{key}': " in config_error(overrides(section, name, value))


@pytest.mark.parametrize(PARAMS, RUN["list_item"])
def test_run_config_refuses_a_list_item_of_the_wrong_type(section, name, value, why):
    assert f"config key '{section}.{name}[0]': " in config_error(overrides(section, name, value))


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_section_must_be_a_mapping(section):
    assert f"'{section}' must be a mapping" in config_error([*BASE, f"{section}=3"])


# --- settings checked by their own code (RecordConfig, EvalConfig, AugmentSpec) ----------

PARAMS = "cls, name, value, why"


@pytest.mark.parametrize(PARAMS, DIRECT["range_bad"] + DIRECT["finite"] + DIRECT["choice_bad"]
                         + DIRECT["text_bad"])
def test_settings_refuse_a_value_their_rule_refuses(cls, name, value, why):
    message = direct_error(cls, name, value)
    assert message == f"{label(cls)(name)} {why}, got {value!r}"


@pytest.mark.parametrize(PARAMS, DIRECT["range_good"] + DIRECT["choice_good"]
                         + DIRECT["text_good"])
def test_settings_accept_a_value_their_rule_allows(cls, name, value, why):
    assert getattr(build(cls, with_companions(cls, name, value)), name) == value


@pytest.mark.parametrize("cls", CHECKED, ids=lambda c: c.__name__)
def test_settings_refuse_values_of_the_wrong_type(cls):
    cases = [p.values for p in DIRECT["wrong_type"] if p.values[0] is cls]
    assert cases
    missed = []
    for _, name, value, _ in cases:
        try:
            build(cls, {name: value})
        except DIRECT_ERROR.get(cls, ConfigError) as exc:
            if not str(exc).startswith(f"{label(cls)(name)} "):
                missed.append(f"{name}={value!r}: {exc}")
        except Exception as exc:  # any other error is a miss too
            missed.append(f"{name}={value!r}: {type(exc).__name__}: {exc}")
        else:
            missed.append(f"{name}={value!r}: accepted")
    assert not missed, "\n".join(missed)


# --- cross-field CHECKS: each broken once ------------------------------------------------

# A CHECK's message -> inputs that break that rule and no other: overrides for the run
# config (sections and root), keyword arguments for the directly built settings.
BREAKING: dict[str, list[str] | dict[str, Any]] = {
    "out must not be empty": ["out="],
    "model.kwargs must not set num_classes (it comes from the data)":
        ["model.kwargs={num_classes: 3}"],
    "augment: need 0 < scale_low <= scale_high":
        ["augment.scale_low=2.0", "augment.scale_high=1.5"],
    "optim.min_lr must be <= optim.lr": ["optim.lr=0.001", "optim.min_lr=0.01"],
    "NWSD needs distill.alpha + distill.beta > 0": ["distill.alpha=0.1", "distill.beta=-0.5"],
    "online KD needs a teacher checkpoint (--teacher)": ["distill.online=true"],
    "choose either --records (offline) or --online --teacher, not both":
        ["distill.online=true", "distill.teacher=t.pt", "distill.records=r"],
    "--teacher is for online KD: add --online (offline KD uses --records)":
        ["distill.teacher=t.pt"],
    "distill.extra_records add record sets to offline KD: give --records first":
        ["distill.extra_records=[r2]"],
    "distill.extra_teachers need distill.teacher (the first teacher)":
        ["distill.extra_teachers=[t2]"],
    "distill.teacher_votes is for online KD; records carry their own votes "
    "(pointkd record --votes)": ["distill.records=r", "distill.teacher_votes=2"],
    "no teacher checkpoint given": {"teachers": []},
    "choose either --resume or --overwrite": {"resume": True, "overwrite": True},
    "no checkpoint given": {"checkpoints": []},
    "no files given": {"files": []},
}

DECLARED_CHECKS = [(cls, message) for cls in CONFIG_CLASSES
                   for _, message in getattr(cls, "CHECKS", ())]


def broken_rules(cls: type, values: dict[str, Any]) -> list[str]:
    obj = types.SimpleNamespace(**values)
    return [message for rule, message in cls.CHECKS if not rule(obj)]


@pytest.mark.parametrize("cls, message", DECLARED_CHECKS,
                         ids=[f"{c.__name__}:{m[:40]}" for c, m in DECLARED_CHECKS])
def test_every_check_is_broken_once_with_its_message(cls, message):
    assert message in BREAKING, f"no breaking input for {cls.__name__}'s CHECK {message!r}"
    inputs = BREAKING[message]
    if cls is not RunConfig and cls not in SECTIONS.values():
        assert isinstance(inputs, dict)
        obj = cls(**{**required(cls), **inputs})
        assert broken_rules(cls, field_values(obj)) == [message]
        if not hasattr(obj, "check"):  # the class does not check itself: the rule alone
            assert check_problem(cls, field_values(obj)) == message
            return
        with pytest.raises(DIRECT_ERROR.get(cls, ConfigError)) as caught:
            obj.check()
        assert str(caught.value) == message
        return
    assert isinstance(inputs, list)
    section = next((s for s, c in SECTIONS.items() if c is cls), "")
    values = field_values(cls())  # the defaults, then the overrides
    for keys, value in map(parse_override, inputs):
        assert keys[:-1] == ([section] if section else []), (keys, cls)
        values[keys[-1]] = float(value) if is_float(hints(cls)[keys[-1]]) else value
    assert broken_rules(cls, values) == [message], "the input must break exactly this rule"
    assert config_error([*BASE, *inputs]) == message


def test_the_breaking_table_has_no_stale_entries():
    declared = [message for _, message in DECLARED_CHECKS]
    assert len(declared) == len(set(declared)), "two CHECKS share a message"
    assert sorted(BREAKING) == sorted(declared)


# --- the declarations themselves, and the loops above -------------------------------------


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_declarations_are_consistent(cls):
    h = hints(cls)
    limits = getattr(cls, "LIMITS", {})
    assert set(limits) <= set(h), f"LIMITS of no field: {sorted(set(limits) - set(h))}"
    for name, rule in limits.items():
        assert not (rule.choices and numeric(rule)), name
        assert choices(h[name]) is None, f"{name}: its Literal makes its LIMITS entry dead"
        if integral(h[name]):
            assert all(isinstance(b, int) for b in (rule.low, rule.high) if b is not None), name
        if rule.text:
            assert str in kinds(h[name]), name
    for (owner, name), _ in COMPANIONS.items():
        assert owner is not cls or name in h, f"companion of no field: {name}"


def test_the_loops_are_not_vacuous():
    def visited(cases: list, index: int = 0) -> set:
        return {p.values[index] for p in cases}

    run_ranges = {(p.values[0], p.values[1]) for p in RUN["range_bad"]}
    direct_ranges = {(p.values[0], p.values[1]) for p in DIRECT["range_bad"]}
    assert len(run_ranges) > 20 and len(direct_ranges) >= 10
    assert visited(RUN["range_bad"]) >= {"data", "optim", "train", "distill", "augment"}
    assert set().union(*(visited(cases) for cases in RUN.values())) >= set(SECTIONS)
    assert visited(DIRECT["range_bad"]) >= {RecordConfig, EvalConfig, AugmentSpec}
    every_field = {(s, f.name) for s, c in SECTIONS.items() for f in dataclasses.fields(c)}
    every_field |= {("", name) for name in ROOT_FIELDS}
    assert {(p.values[0], p.values[1]) for p in RUN["wrong_type"]} == every_field
    assert len(visited(RUN["finite"], 1)) >= 15
    assert len(RUN["choice_good"]) >= 10 and len(DIRECT["choice_good"]) >= 8
    assert len(RUN["text_bad"]) >= 4 and len(DIRECT["text_bad"]) >= 2
    assert RUN["list_item"] and RUN["null"]
    assert len(DECLARED_CHECKS) >= 13
    assert {c for c, _ in DECLARED_CHECKS} >= {RunConfig, OptimConfig, DistillConfig,
                                               AugmentSpec, RecordConfig, EvalConfig}
