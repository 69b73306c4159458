"""The `pointkd` command, generated from the settings dataclasses (`pointkd.config.stages`,
`pointkd.config.run`): each field is an option (or argument) of its command, its `Literal`
the choices, its `LIMITS` rule the check of the value, its declared help the `--help` line.
A command builds its config from the parsed options, runs its stage and prints the result.

Expected problems raise `PointKDError`: printed as one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pointkd._version import __version__
from pointkd.config.limits import Range, choices, flags, help_of, rules
from pointkd.config.run import RunCommand, RunConfig
from pointkd.config.stages import (
    DataConvertConfig,
    DataInfoConfig,
    DataPreviewConfig,
    DemoConfig,
    EvalConfig,
    ExportConfig,
    ModelsConfig,
    PredictConfig,
    ProcessConfig,
    RecordConfig,
    RecordsInfoConfig,
    RecordsStatsConfig,
    RecordsVerifyConfig,
)
from pointkd.errors import ConfigError, PointKDError, quiet_warnings

EPILOG = """examples:
  pointkd data info ../shared/data/modelnet40_1024
  pointkd train --model pointnet --data synthetic --out runs/t train.epochs=5
  pointkd eval runs/t/best.pt --data synthetic
  pointkd record --teacher runs/t/best.pt --data synthetic --k 10 --out runs/rec
  pointkd records info runs/rec
  pointkd distill --records runs/rec --student student_s --out runs/s   (data: the records')
  pointkd predict runs/s/best.pt cloud.ply other_clouds/
  pointkd export runs/s/best.pt --onnx student.onnx --check-data synthetic
  pointkd demo                              (or: pointkd demo --data ../shared/data/modelnet40_1024)
  torchrun --nproc-per-node 2 -m pointkd train ...   (or: pointkd train --nproc 2 ...)
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: `pointkd: error: ...`, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"pointkd: error: {message} (see `{self.prog} --help`)\n")


# --- options from fields ---------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One field of a settings dataclass on the command line."""

    field: dataclasses.Field
    dest: str  # the parsed value's name: the field's, or `section.key` for a RunConfig shortcut
    flags: tuple[str, ...]  # () for a positional argument
    hint: Any  # the field's annotated type
    rule: Range  # its Literal choices or LIMITS entry
    shortcut: bool = False  # a RunConfig field: `--epochs N` is the override `train.epochs=N`

    @property
    def required(self) -> bool:
        """A field without a default must be given (a shortcut never: the config has one)."""
        return not self.shortcut and self.field.default is dataclasses.MISSING and \
            self.field.default_factory is dataclasses.MISSING


def options(cls: type, command: str = "") -> list[Option]:
    """The options of `cls`'s fields on `command`: every field not declared `cli=False`; of
    `RunConfig` only the shortcuts (fields declared with a `flag` for `command`)."""
    if cls is RunConfig:
        return _shortcuts(command)
    hints, found = typing.get_type_hints(cls), rules(cls)
    return [Option(f, f.name, flags(f, command), hints[f.name], found[f.name])
            for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def _shortcuts(command: str) -> list[Option]:
    out = []
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        section = hints[f.name]
        members = ([(f"{f.name}.{g.name}", g, section) for g in dataclasses.fields(section)]
                   if dataclasses.is_dataclass(section) else [(f.name, f, RunConfig)])
        for key, g, cls in members:
            if g.metadata.get("flag") and flags(g, command):
                out.append(Option(g, key, flags(g, command), typing.get_type_hints(cls)[g.name],
                                  rules(cls)[g.name], shortcut=True))
    return out


def _value_type(hint: Any) -> tuple[type, bool]:
    """(the type one value on the command line has, whether the field is a list)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is Literal:
        return type(typing.get_args(hint)[0]), False
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def _parse(typ: type, rule: Range) -> Callable[[str], Any]:
    """argparse type: one value of `typ` that `rule` allows (the message names the bound)."""

    def parse(text: str) -> Any:
        value: Any = text
        if typ is int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        elif typ is float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        why = rule.problem(value)
        if why:
            shown = repr(value) if typ is str else value
            raise argparse.ArgumentTypeError(f"{why}, got {shown}")
        return value

    return parse


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _help(opt: Option) -> str:
    """The declared help, then the config key a shortcut sets and the default."""
    text, default, notes = help_of(opt.field), _default(opt.field), []
    if opt.shortcut:
        notes.append(opt.dest)
    if isinstance(default, list) and default:
        notes.append("default " + " ".join(map(str, default)))
    elif isinstance(default, int | float | str) and not isinstance(default, bool) and \
            default != "":
        notes.append(f"default {default}")
    if notes:
        text += f" ({'; '.join(notes)})"
    if opt.flags and opt.flags[0].startswith("--no-"):
        text = "turn off: " + text
    return text.replace("%", "%%")


def add_option(p: argparse.ArgumentParser, opt: Option) -> None:
    """`opt` on parser `p`: its value, when given, under `opt.dest` (None when not given)."""
    meta, f = opt.field.metadata, opt.field
    typ, is_list = _value_type(opt.hint)
    if meta.get("from_cli"):
        typ, is_list = str, False
    values = choices(opt.hint) if not meta.get("from_cli") else None
    kw: dict[str, Any] = {"help": _help(opt)}
    if typ is bool:
        kw["action"] = "store_false" if f.default is True else "store_true"
    else:
        kw["type"] = _parse(typ, Range() if values else opt.rule)
        if values:
            kw["choices"] = values
        elif opt.flags:
            kw["metavar"] = meta.get("metavar") or opt.flags[0].lstrip("-").replace(
                "-", "_").upper()
        elif meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("repeat"):
            kw["action"] = "append"
        elif is_list:
            kw["nargs"] = meta.get("nargs") or ("+" if opt.required or opt.flags else "*")
    if opt.flags:
        p.add_argument(*opt.flags, dest=opt.dest, default=None, required=opt.required, **kw)
    else:
        p.add_argument(opt.dest, **kw)


def values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options of `cls` that were given, by dest (`from_cli` conversions applied)."""
    out = {}
    for opt in options(cls, getattr(args, "command_name", "")):
        value = getattr(args, opt.dest, None)
        if value is not None:
            convert = opt.field.metadata.get("from_cli")
            out[opt.dest] = convert(value) if convert else value
    return out


def config(cls: type, args: argparse.Namespace) -> Any:
    """`cls` with the given options' values and its own defaults for the others."""
    return cls(**values(cls, args))


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, the dataclasses its options come from, what it does."""

    help: str
    run: Callable[[argparse.Namespace], int]
    configs: tuple[type, ...]
    process: tuple[str, ...] = ()  # the ProcessConfig options it takes


def command_options(name: str) -> list[Option]:
    """Every option of command `name` ("eval", "data info"), in `--help` order."""
    cmd = COMMANDS[name]
    return [*(o for cls in cmd.configs for o in options(cls, name)),
            *(o for o in options(ProcessConfig) if o.dest in cmd.process)]


# --- the commands ------------------------------------------------------------------------------

def _set_threads(args: argparse.Namespace) -> None:
    threads = config(ProcessConfig, args).threads
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _set_native_ops(choice: str | None) -> None:
    """--native-ops wins over POINTKD_NATIVE_OPS; a bad value of the variable is an error
    here, before any work, rather than in the middle of a run."""
    if choice is None and not os.environ.get("POINTKD_NATIVE_OPS"):
        return  # the default: nothing to check, and no torch import for `pointkd --help`
    from pointkd.models.kernels import native

    if choice is not None:
        native.set_mode(choice)
        os.environ["POINTKD_NATIVE_OPS"] = choice  # for worker processes (demo, torchrun)
    native.mode()


def _main_process() -> bool:
    """False in the non-zero ranks of a torchrun job (rank 0 alone reports)."""
    return os.environ.get("RANK", "0") == "0"


def _relaunch(args: argparse.Namespace) -> int | None:
    """`--nproc N` outside a torchrun job: run this very command under torchrun."""
    from pointkd import distributed

    nproc = config(ProcessConfig, args).nproc
    if nproc and nproc != 1 and "WORLD_SIZE" not in os.environ:
        return distributed.launch(nproc, distributed.strip_nproc(args.argv))
    return None


def _keep_freed_memory_on_cpu(device: str) -> None:
    """Training on CPU: keep freed activations in the heap for the next step instead of
    page-faulting them in again (exact; README: CPU speed). POINTKD_KEEP_FREED_MEMORY=0 opts
    out."""
    from pointkd.cpu import keep_freed_memory
    from pointkd.device import resolve_device

    if os.environ.get("POINTKD_KEEP_FREED_MEMORY", "1") != "0" and \
            resolve_device(device).type == "cpu":
        keep_freed_memory()


def _run_config(args: argparse.Namespace) -> tuple[RunConfig, RunCommand, dict[str, Any]]:
    """The run's config: defaults <- --config <- the shortcuts given <- dotted overrides."""
    from pointkd.config.run import load_config

    opts, given = config(RunCommand, args), values(RunConfig, args)
    shortcuts: dict[str, Any] = {}
    for opt in options(RunConfig, args.command_name):
        if opt.dest in given:
            value, rest = given[opt.dest], opt.field.metadata.get("rest")
            if rest:  # --records A --records B: distill.records A, distill.extra_records [B]
                section = opt.dest.rpartition(".")[0]
                value, more = value[0], value[1:]
                if more:
                    shortcuts[f"{section}.{rest}"] = more
            shortcuts[opt.dest] = value
    # strings quoted, so that YAML keeps `--out ~` or `--data 123` a path (not null, 123)
    overrides = [f"{k}={json.dumps(v) if isinstance(v, str | list) else v}"
                 for k, v in shortcuts.items()]
    # explicit dotted overrides win over the shortcuts
    return load_config(opts.config, overrides + list(opts.overrides)), opts, shortcuts


def _data_source(cfg: RunConfig, opts: RunCommand, shortcuts: dict[str, Any]) -> str:
    """Where the run's dataset came from, for the `data:` line a run starts with."""
    if shortcuts.get("data.path") or any(o.startswith("data.path=") for o in opts.overrides):
        return "from the command line"
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (an HDF5 folder, a class-folder "
                          "dataset, or 'synthetic')"
                          + (f"; {opts.config} does not set data.path" if opts.config else ""))
    return f"data.path of {opts.config}"


def cmd_train(args: argparse.Namespace) -> int:
    """`train` and `distill`: the one training loop, an epoch line each epoch
    (train.progress), the result line."""
    if (code := _relaunch(args)) is not None:
        return code
    cfg, opts, shortcuts = _run_config(args)
    from pointkd.stages import train
    from pointkd.training.outputs import epoch_line

    source = (train.data_source(cfg) if args.command_name == "distill" else None) or \
        _data_source(cfg, opts, shortcuts)
    if _main_process():
        print(f"data: {cfg.data.path} ({source})", flush=True)

    def say_epoch(row: dict) -> None:
        print(epoch_line(row, cfg.train.epochs), flush=True)

    _keep_freed_memory_on_cpu(cfg.train.device)
    result = train.run(cfg, resume=opts.resume, overwrite=opts.overwrite,
                       on_epoch=say_epoch if cfg.train.progress else None)
    if result is not None and _main_process():
        print(result.text(), flush=True)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from pointkd.data import describe

    cfg = config(DataInfoConfig, args)
    print(describe(cfg.path, splits=cfg.split, num_points=cfg.num_points))
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from pointkd import rundir
    from pointkd.data import load_split, save_preview

    cfg = config(DataPreviewConfig, args)
    rundir.check_output_file(cfg.out, cfg.overwrite, inputs=[cfg.path])
    ds = load_split(cfg.path, cfg.split, num_points=cfg.num_points)
    save_preview(ds, cfg.out, per_class=cfg.per_class)
    print(f"wrote {cfg.out}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from pointkd.data.convert import convert

    cfg = config(DataConvertConfig, args)
    report = convert(cfg.src, cfg.dst, splits=cfg.split, num_points=cfg.num_points)
    for split, r in report.items():
        print(f"{split}: {r['shapes']} shapes x {r['points']} points -> {r['file']}")
        print(f"  fingerprint {r['fingerprint']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pointkd.stages import evaluate

    _set_threads(args)
    print(evaluate.run(config(EvalConfig, args)).text())
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    if (code := _relaunch(args)) is not None:
        return code
    from pointkd.stages import record

    _set_threads(args)
    result = record.run(config(RecordConfig, args))
    if result is not None:
        print(result.text())
    return 0


def cmd_records_info(args: argparse.Namespace) -> int:
    from pointkd.records import info

    print(info(config(RecordsInfoConfig, args).dir))
    return 0


def cmd_records_verify(args: argparse.Namespace) -> int:
    from pointkd.stages.records import verify

    cfg = config(RecordsVerifyConfig, args)
    print(verify(cfg.dir, data=cfg.data, teachers=cfg.teachers, config=cfg.config,
                 weights=cfg.weights))
    return 0


def cmd_records_stats(args: argparse.Namespace) -> int:
    from pointkd.records.stats import record_stats

    cfg = config(RecordsStatsConfig, args)
    stats = record_stats(cfg.dir, data=cfg.data)
    print(json.dumps(stats.to_dict(), indent=1) if cfg.json else stats.text())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pointkd.models import create_model, list_models

    classes = config(ModelsConfig, args).num_classes
    print(f"parameters with a {classes}-class head (--classes N for another count)")
    for name in list_models():
        model = create_model(name, num_classes=classes)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:24s} {n / 1e6:8.3f}M params")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pointkd.stages import predict

    cfg = config(PredictConfig, args)

    def say(r: dict) -> None:  # each file as soon as its batch is done
        if "error" in r:  # a bad file is reported and does not stop the rest
            print(f"pointkd: error: {r['error']}", file=sys.stderr)
        elif not cfg.json:
            print(predict.line(r))

    _set_threads(args)
    result = predict.run(cfg, on_result=say)
    if cfg.json:
        print(result.text())
    return 1 if result.failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from pointkd.stages import export

    cfg = config(ExportConfig, args)
    _set_threads(args)
    print(export.run(cfg).text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pointkd.stages.demo import run_demo

    cfg = config(DemoConfig, args)
    _set_threads(args)
    run_demo(cfg.out, quick=cfg.quick, config=cfg.config, data=cfg.data, epochs=cfg.epochs,
             device=cfg.device, overrides=cfg.overrides)
    return 0


COMPUTE = ("threads", "native_ops")  # the ProcessConfig options of every command with a model
COMMANDS: dict[str, Command] = {
    "data info": Command("per-class counts, points per shape, bounds, fingerprint",
                         cmd_data_info, (DataInfoConfig,)),
    "data preview": Command("save a PNG grid of sample clouds", cmd_data_preview,
                            (DataPreviewConfig,)),
    "data convert": Command("write any readable dataset as pointkd HDF5 (<split>.h5 + "
                            "shape_names.txt); prints each split's fingerprint",
                            cmd_data_convert, (DataConvertConfig,)),
    "train": Command("train a model (teacher or plain student)", cmd_train,
                     (RunConfig, RunCommand), ("native_ops", "nproc")),
    "distill": Command("train a student from records (offline) or teacher (online)", cmd_train,
                       (RunConfig, RunCommand), ("native_ops", "nproc")),
    "eval": Command("OA, mAcc, per-class, confusion, params, FLOPs, latency", cmd_eval,
                    (EvalConfig,), COMPUTE),
    "record": Command("run the teacher once over K augmented copies; store logits", cmd_record,
                      (RecordConfig,), (*COMPUTE, "nproc")),
    "records info": Command("rows, K, bytes per row, size, teachers, spec", cmd_records_info,
                            (RecordsInfoConfig,)),
    "records verify": Command("re-check checksums, sizes, dataset, teacher", cmd_records_verify,
                              (RecordsVerifyConfig,)),
    "records stats": Command("teacher accuracy, softness at each tau, view spread",
                             cmd_records_stats, (RecordsStatsConfig,)),
    "models": Command("list registered models with parameter counts", cmd_models,
                      (ModelsConfig,)),
    "predict": Command("classify point-cloud files (.npy .xyz .txt .pcd .ply .off)",
                       cmd_predict, (PredictConfig,), COMPUTE),
    "export": Command("export to ONNX (dynamic batch, and point count where the model allows) "
                      "with a parity check", cmd_export, (ExportConfig,), COMPUTE),
    "demo": Command("the whole pipeline on the synthetic dataset in a few minutes; with --data, "
                    "distil from the zoo's ModelNet40 records", cmd_demo, (DemoConfig,),
                    COMPUTE),
}
GROUPS = {"data": "inspect, preview and convert datasets",
          "records": "inspect and verify record sets"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pointkd",
        description="Offline knowledge distillation for point-cloud classification: train a "
        "teacher, record its logits once, distill small students from the records alone.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pointkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, Any] = {}
    for name, cmd in COMMANDS.items():
        group, _, action = name.rpartition(" ")
        if group and group not in groups:
            p_group = sub.add_parser(group, help=GROUPS[group])
            groups[group] = p_group.add_subparsers(dest=f"{group}_command", metavar="ACTION",
                                                   required=True)
        p = (groups[group] if group else sub).add_parser(action, help=cmd.help)
        for opt in command_options(name):
            add_option(p, opt)
        p.set_defaults(func=cmd.run, command_name=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may come between options too (argparse takes one positional run only)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    args.argv = argv
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _set_native_ops(getattr(args, "native_ops", None))
        with quiet_warnings():
            code = func(args)
    except PointKDError as exc:
        print(f"pointkd: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("pointkd: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `pointkd records info DIR | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    if "torch.distributed" in sys.modules:  # only a torchrun job ever initialised it
        from pointkd import distributed

        distributed.shutdown(code)  # in a torchrun job: exits here
    return code


if __name__ == "__main__":
    sys.exit(main())
