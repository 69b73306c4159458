"""The command line is generated from the settings dataclasses: these tests are derived from
the declarations (every command, every field with an option, every range and choice), plus a
few end-to-end checks that today's flags still mean what they meant."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing

import pytest

from pointkd import cli
from pointkd.config.limits import SEED, help_of
from pointkd.config.run import DataConfig, RunConfig, TrainConfig
from pointkd.config.stages import (
    ExportConfig,
    ModelsConfig,
    PredictConfig,
    ProcessConfig,
    RecordConfig,
)
from pointkd.errors import RecordError

COMMANDS = sorted(cli.COMMANDS)  # "eval", "data info", ...
ALL = [(name, opt) for name in COMMANDS for opt in cli.command_options(name)]
OPTIONS = [(name, opt) for name, opt in ALL if opt.flags]


def _id(case) -> str:
    name, opt = case[:2]
    return f"{name} {opt.flags[0] if opt.flags else opt.dest}" + (
        f" {case[2]}" if len(case) > 2 else "")


def _numeric(opt: cli.Option) -> type | None:
    typ, _ = cli._value_type(opt.hint)
    return typ if typ in (int, float) and not opt.field.metadata.get("from_cli") else None


def _outside(opt: cli.Option) -> list:
    """Values just outside the option's range."""
    typ, rule, out = _numeric(opt), opt.rule, []
    if rule.low is not None:
        out.append(rule.low if rule.low_open else
                   (rule.low - 1 if typ is int else math.nextafter(rule.low, -math.inf)))
    if rule.high is not None:
        out.append(rule.high if rule.high_open else
                   (rule.high + 1 if typ is int else math.nextafter(rule.high, math.inf)))
    return out


def _inside(opt: cli.Option) -> list:
    """The closed ends of the option's range."""
    rule = opt.rule
    return [v for v, is_open in ((rule.low, rule.low_open), (rule.high, rule.high_open))
            if v is not None and not is_open]


def _required(name: str) -> list[str]:
    """Placeholder values for the command's required arguments and options."""
    argv = []
    for opt in cli.command_options(name):
        if opt.required:
            argv += [opt.flags[0], "x"] if opt.flags else ["x"]
    return argv


def _parse(name: str, *args: str):
    ns, extra = cli.build_parser().parse_known_args([*name.split(), *_required(name), *args])
    assert not extra, extra
    return ns


@pytest.fixture
def cli_run(cli):
    """The in-process CLI runner (`cli` here is the module)."""
    return cli


def _one_line_usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith("pointkd: error: ") and err.count("\n") == 1, err
    return err


RANGED = [(name, opt, v) for name, opt in OPTIONS if _numeric(opt) for v in _outside(opt)]
AT_BOUND = [(name, opt, v) for name, opt in OPTIONS if _numeric(opt) for v in _inside(opt)]
FLOATS = [(name, opt) for name, opt in OPTIONS if _numeric(opt) is float]
CHOICES = [(name, opt) for name, opt in OPTIONS if opt.rule.choices]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_in_the_commands_help(capsys, name):
    with pytest.raises(SystemExit) as stop:
        cli.main([*name.split(), "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    flat = "".join(text.split())  # argparse wraps (and may break words at hyphens)
    for opt in cli.command_options(name):
        for flag in opt.flags or (opt.field.metadata.get("metavar") or opt.dest,):
            assert flag in text, (name, flag)
        assert "".join(help_of(opt.field).split()) in flat, (name, opt.dest)


@pytest.mark.parametrize("name", COMMANDS)
def test_no_two_options_of_a_command_share_a_name(name):
    opts = cli.command_options(name)
    names = [flag for o in opts for flag in o.flags]
    assert len(names) == len(set(names)), names
    dests = [o.dest for o in opts]
    assert len(dests) == len(set(dests)), dests


@pytest.mark.parametrize("case", RANGED, ids=map(_id, RANGED))
def test_a_value_just_outside_a_range_is_a_one_line_error(capsys, case):
    name, opt, value = case
    err = _one_line_usage_error(capsys, [*name.split(), f"{opt.flags[0]}={value}"])
    assert f"argument {'/'.join(opt.flags)}: must be " in err, err
    assert f"(see `pointkd {name} --help`)" in err


@pytest.mark.parametrize("case", AT_BOUND, ids=map(_id, AT_BOUND))
def test_a_value_at_a_closed_end_of_a_range_is_accepted(case):
    name, opt, value = case
    assert getattr(_parse(name, f"{opt.flags[0]}={value}"), opt.dest) in (value, [value])


@pytest.mark.parametrize("case", FLOATS, ids=map(_id, FLOATS))
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "x"])
def test_a_number_option_takes_finite_numbers_only(capsys, case, text):
    name, opt = case
    err = _one_line_usage_error(capsys, [*name.split(), f"{opt.flags[0]}={text}"])
    assert f"argument {'/'.join(opt.flags)}: " in err and text in err, err


@pytest.mark.parametrize("case", CHOICES, ids=map(_id, CHOICES))
def test_a_choice_outside_the_literal_is_refused_and_each_choice_accepted(capsys, case):
    name, opt = case
    err = _one_line_usage_error(capsys, [*name.split(), opt.flags[0], "not-a-choice"])
    assert f"argument {'/'.join(opt.flags)}: invalid choice" in err, err
    for value in opt.rule.choices:
        assert getattr(_parse(name, opt.flags[0], str(value)), opt.dest) == value


def _settings_classes() -> set[type]:
    """Every dataclass a command's options come from, and RunConfig's own sections
    (AugmentSpec, declared in config/types.py, documents its fields in comments)."""
    classes = {cls for cmd in cli.COMMANDS.values() for cls in cmd.configs} | {ProcessConfig}
    hints = typing.get_type_hints(RunConfig)
    classes |= {t for t in hints.values() if dataclasses.is_dataclass(t)
                and t.__module__ == RunConfig.__module__}
    return classes


@pytest.mark.parametrize("cls", sorted(_settings_classes(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_field_declares_its_help(cls):
    for f in dataclasses.fields(cls):
        assert help_of(f).strip(), f"{cls.__name__}.{f.name} has no help"


def test_every_command_has_options_from_its_configs():
    for name, cmd in cli.COMMANDS.items():
        assert cmd.help and cmd.configs, name
        declared = {o.dest for cls in cmd.configs for o in cli.options(cls, name)}
        assert declared <= {o.dest for o in cli.command_options(name)}


def test_seeds_have_one_rule_everywhere():
    assert RecordConfig.LIMITS["seed"] == TrainConfig.LIMITS["seed"] == \
        DataConfig.LIMITS["split_seed"] == SEED
    with pytest.raises(RecordError, match=r"^--seed must be >= 0, got -1$"):
        RecordConfig(teachers=["t.pt"], data="synthetic", out="r", seed=-1).check()
    with pytest.raises(RecordError, match=r"^--batch-size must be >= 1, got 0$"):
        RecordConfig(teachers=["t.pt"], data="synthetic", out="r", batch_size=0).check()


def test_python_defaults_are_the_cli_defaults():
    """`pointkd.api` calls these with the Python signatures: the same defaults."""
    from pointkd.stages.export import EXPORT_SAMPLERS, export_onnx
    from pointkd.stages.predict import iter_predictions

    export = ExportConfig("m.pt", "m.onnx")
    for name, p in inspect.signature(export_onnx).parameters.items():
        if p.default is not inspect.Parameter.empty:
            assert getattr(export, name) == p.default, name
    predict = PredictConfig("m.pt", ["a.npy"])
    for name, p in inspect.signature(iter_predictions).parameters.items():
        if p.default is not inspect.Parameter.empty:
            assert getattr(predict, name) == p.default, name
    assert set(EXPORT_SAMPLERS) == set(cli.rules(ExportConfig)["sampler"].choices)


# --- end to end: today's flags, parsed into the configs the stages get ------------------------

@pytest.fixture
def captured(monkeypatch):
    """Replace the stages' work by a recorder of what they were called with."""
    from pointkd.stages import evaluate, record, train

    seen: dict = {}

    class Text:
        def text(self) -> str:
            return "ok"

    def keep(name, result=None):
        def stage(*args, **kwargs):
            seen[name] = (args, kwargs)
            return result
        return stage

    monkeypatch.setattr(record, "run", keep("record"))
    monkeypatch.setattr(evaluate, "run", keep("eval", Text()))
    monkeypatch.setattr(train, "run", keep("train"))
    monkeypatch.setattr(cli, "_keep_freed_memory_on_cpu", lambda device: None)
    return seen


def test_record_flags_parse_to_a_record_config(cli_run, captured, tmp_path):
    code, out, _ = cli_run("record", "--teacher", "a", "--teacher", "b", "--k", "3",
                           "--no-progress", "--data", "synthetic", "--out", tmp_path / "r",
                           "--weights", "w", "--logits", "fp16", "--seed", "7")
    assert code == 0 and out == ""
    (cfg,), _ = captured["record"]
    assert cfg == RecordConfig(teachers=["a", "b"], data="synthetic", out=str(tmp_path / "r"),
                               k=3, progress=False, weights=["w"], logits="fp16", seed=7)


def test_record_config_option_is_the_augment_section(cli_run, captured, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("augment:\n  rotate: true\n  shift: 0.1\n")
    assert cli_run("record", "--teacher", "a", "--data", "d", "--out", tmp_path / "r",
                   "--config", path)[0] == 0
    (cfg,), _ = captured["record"]
    assert cfg.augment.rotate and cfg.augment.shift == 0.1


def test_eval_flags_parse_to_an_eval_config(cli_run, captured):
    code, out, _ = cli_run("eval", "a.pt", "b.pt", "--data", "synthetic", "--no-latency",
                           "--votes", "2", "--batch-size", "4")
    assert code == 0 and out == "ok\n"
    (cfg,), _ = captured["eval"]
    assert cfg.checkpoints == ["a.pt", "b.pt"] and not cfg.latency
    assert (cfg.votes, cfg.batch_size, cfg.split, cfg.device) == (2, 4, "test", "auto")


def test_distill_shortcuts_are_the_config_overrides(cli_run, captured, tmp_path):
    common = ["--data", "synthetic", "--out", str(tmp_path / "d"), "--device", "cpu"]
    assert cli_run("distill", "--records", "A", "--records", "B", "--student", "student_xs",
                   "--alpha", "0.5", "--tau", "2", "--epochs", "3", "--resume",
                   *common)[0] == 0
    (cfg,), kwargs = captured["train"]
    assert (cfg.distill.records, cfg.distill.extra_records) == ("A", ["B"])
    assert (cfg.model.name, cfg.distill.alpha, cfg.distill.tau, cfg.train.epochs) == (
        "student_xs", 0.5, 2.0, 3)
    assert kwargs["resume"] and not kwargs["overwrite"]
    assert cli_run("distill", "distill.records=A", "distill.extra_records=[B]",
                   "model.name=student_xs", "distill.alpha=0.5", "distill.tau=2",
                   "train.epochs=3", *common)[0] == 0
    assert captured["train"][0][0] == cfg


def test_train_dotted_overrides_win_over_shortcuts(cli_run, captured, tmp_path):
    assert cli_run("train", "--epochs", "3", "--data", "synthetic", "train.epochs=5",
                   "--out", tmp_path / "t", "--threads", "1", "--model", "student_xs")[0] == 0
    (cfg,), _ = captured["train"]
    assert (cfg.train.epochs, cfg.train.threads, cfg.model.name, cfg.out) == (
        5, 1, "student_xs", str(tmp_path / "t"))


def test_models_takes_both_spellings():
    for flag in ("--classes", "--num-classes"):
        assert cli.config(ModelsConfig, _parse("models", flag, "10")) == ModelsConfig(10)
    assert cli.config(ModelsConfig, _parse("models")) == ModelsConfig(40)


def test_predict_prints_each_file_and_exits_1_on_a_bad_one(cli_run, monkeypatch):
    from pointkd.stages import predict

    results = [{"file": "a.npy", "top": [{"class": "chair", "index": 0, "prob": 0.9},
                                         {"class": "sofa", "index": 1, "prob": 0.1}]},
               {"file": "b.npy", "error": "b.npy: too few points"}]
    seen = {}

    def fake(checkpoint, inputs, **kwargs):
        seen.update(checkpoint=checkpoint, inputs=inputs, **kwargs)
        yield from results

    monkeypatch.setattr(predict, "iter_predictions", fake)
    code, out, err = cli_run("predict", "m.pt", "a.npy", "b.npy", "--topk", "2",
                             "--no-progress", "--min-points", "5")
    assert code == 1
    assert out == "a.npy: chair 0.900, sofa 0.100\n"
    assert err == "pointkd: error: b.npy: too few points\n"
    assert seen == {"checkpoint": "m.pt", "inputs": ["a.npy", "b.npy"], "topk": 2,
                    "batch_size": 32, "device": "auto", "progress": False, "min_points": 5}
    code, out, _ = cli_run("predict", "m.pt", "a.npy", "--json")
    assert code == 1 and out.startswith("[\n") and '"class": "chair"' in out


def test_export_prints_its_report(cli_run, monkeypatch, tmp_path):
    from pointkd.stages import export

    report = {"onnx": "m.onnx", "bytes": 420_000, "opset": 17, "dynamic_points": False,
              "num_points": 1024,
              "parity": {"clouds": 8, "max_abs_diff": 1.5e-6, "argmax_agreement": 1.0},
              "sampler": {"exported": "first", "trained": "fps", "check_oa_exported": 0.5,
                          "check_oa_trained": 0.75, "top1_agreement_with_trained": 0.625}}
    seen = {}

    def fake(checkpoint, out, **kwargs):
        seen.update(checkpoint=checkpoint, out=out, **kwargs)
        return report

    monkeypatch.setattr(export, "export_onnx", fake)
    onnx = str(tmp_path / "m.onnx")
    code, out, _ = cli_run("export", "m.pt", "--onnx", onnx, "--opset", "17",
                           "--sampler", "first", "--check-data", "synthetic")
    assert code == 0
    assert out == ("wrote m.onnx (0.42 MB, opset 17; input (batch, points, 3) unit-sphere "
                   "normalised, exactly 1024 points); parity on 8 clouds: max |diff| 1.50e-06, "
                   "argmax agreement 100.00%\n"
                   "sampler first instead of fps: accuracy on the check clouds 50.00% vs "
                   "75.00% as trained, top-1 agreement 62.50%\n")
    assert seen == {"checkpoint": "m.pt", "out": onnx, "opset": 17, "check_data": "synthetic",
                    "check_count": 256, "device": "cpu", "sampler": "first"}
    del report["parity"], report["sampler"]["check_oa_exported"]
    report["dynamic_points"] = True
    assert cli_run("export", "m.pt", "--onnx", onnx)[1] == (
        "wrote m.onnx (0.42 MB, opset 17; input (batch, points, 3) unit-sphere normalised, any "
        "number of points)\nsampler first instead of fps (--check-data measures what it "
        "costs)\n")
