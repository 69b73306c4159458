"""The `pointkd` command. Subcommands only parse arguments and call the stage functions.

Expected problems raise `PointKDError`: printed as one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

from pointkd._version import __version__
from pointkd.config.limits import MAX_THREADS
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


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer >= `low` (and <= `high`; the message names the option and
    the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


def finite_float(text: str) -> float:
    """argparse type: a finite number (ranges are the config's to check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `distill` (both end in the same training loop)."""
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--data", help="dataset: HDF5 folder, class folders, or 'synthetic' "
                   "(required unless the config sets data.path)")
    p.add_argument("--out", help="run directory (default: from config)")
    p.add_argument("--epochs", type=int_at_least(1), help="shortcut for train.epochs=N")
    p.add_argument("--seed", type=int_at_least(0), help="shortcut for train.seed=N")
    _add_compute_options(p, default_device=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace pointkd's own files in an existing run directory (docs/usage.md: "
                   "Output directories)")
    _add_nproc(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted config overrides, e.g. train.epochs=5 optim.lr=0.002")


def _add_compute_options(p: argparse.ArgumentParser, default_device: str | None = "auto") -> None:
    """--device and --threads, the same on every command that runs a model."""
    p.add_argument("--device", default=default_device,
                   help="auto | cpu | cuda | cuda:N" + (f" (default {default_device})"
                                                        if default_device else ""))
    p.add_argument("--threads", type=int_at_least(1, MAX_THREADS), default=None,
                   help="CPU threads for PyTorch (default: torch's own choice; fewer than the "
                   f"cores on a busy machine; at most {MAX_THREADS}, 4 per core)")
    p.add_argument("--native-ops", choices=["auto", "off"], default=None,
                   help="pointkd's C++ CPU kernels: auto (default: built once on first use, "
                   "else the PyTorch ops) or off; the same as POINTKD_NATIVE_OPS")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _set_native_ops(choice: str | None) -> None:
    """--native-ops wins over POINTKD_NATIVE_OPS; a bad value of the variable is an error
    here, before any work, rather than in the middle of a run."""
    import os

    if choice is None and not os.environ.get("POINTKD_NATIVE_OPS"):
        return  # the default: nothing to check, and no torch import for `pointkd --help`
    from pointkd.models.kernels import native

    if choice is not None:
        native.set_mode(choice)
        os.environ["POINTKD_NATIVE_OPS"] = choice  # for worker processes (demo, torchrun)
    native.mode()


def _main_process() -> bool:
    """False in the non-zero ranks of a torchrun job (rank 0 alone reports)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int_at_least(0), default=0,
                   help="run as N processes on this machine (torchrun --standalone); "
                   "see docs/distributed.md")


def _relaunch(args: argparse.Namespace) -> int | None:
    """`--nproc N` outside a torchrun job: run this very command under torchrun."""
    import os

    from pointkd import distributed

    if args.nproc and args.nproc != 1 and "WORLD_SIZE" not in os.environ:
        return distributed.launch(args.nproc, distributed.strip_nproc(args.argv))
    return None


def _run_config(args: argparse.Namespace, extra: dict[str, object]):
    from pointkd.config.run import load_config

    shortcuts = {
        "data.path": args.data,
        "out": args.out,
        "train.epochs": args.epochs,
        "train.seed": args.seed,
        "train.device": args.device,
        "train.threads": args.threads,
        **extra,
    }
    # strings quoted, so that YAML keeps `--out ~` or `--data 123` a path (not null, 123)
    overrides = [f"{k}={json.dumps(v) if isinstance(v, str | list) else v}"
                 for k, v in shortcuts.items() if v is not None]
    # explicit dotted overrides win over the shortcuts
    return load_config(args.config, overrides + list(args.overrides))


def _say_data(cfg, source: str) -> None:
    if _main_process():
        print(f"data: {cfg.data.path} ({source})", flush=True)


def _data_source(args: argparse.Namespace, cfg) -> str:
    """Where the run's dataset came from, for the `data:` line a run starts with."""
    if args.data or any(o.startswith("data.path=") for o in args.overrides):
        return "from the command line"
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (an HDF5 folder, a class-folder "
                          "dataset, or 'synthetic')"
                          + (f"; {args.config} does not set data.path" if args.config else ""))
    return f"data.path of {args.config}"


def _train(cfg, args: argparse.Namespace) -> int:
    """Run the training loop, an epoch line each epoch (train.progress), the result line."""
    from pointkd.stages import train
    from pointkd.training.outputs import epoch_line

    def say_epoch(row: dict) -> None:
        print(epoch_line(row, cfg.train.epochs), flush=True)

    _keep_freed_memory_on_cpu(cfg.train.device)
    results = train.run(cfg, resume=args.resume, overwrite=args.overwrite,
                           on_epoch=say_epoch if cfg.train.progress else None)
    return _finish(results, cfg)


def _keep_freed_memory_on_cpu(device: str) -> None:
    """Training on CPU: keep freed activations in the heap for the next step instead of
    page-faulting them in again (exact; README: CPU speed). POINTKD_KEEP_FREED_MEMORY=0 opts
    out."""
    from pointkd.cpu import keep_freed_memory
    from pointkd.device import resolve_device

    if os.environ.get("POINTKD_KEEP_FREED_MEMORY", "1") != "0" and \
            resolve_device(device).type == "cpu":
        keep_freed_memory()


def _finish(results, cfg) -> int:
    if results is not None and _main_process():
        print(results.text(), flush=True)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from pointkd.data import describe

    print(describe(args.path, splits=args.split, num_points=args.num_points))
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from pointkd import rundir
    from pointkd.data import load_split, save_preview

    rundir.check_output_file(args.out, args.overwrite, inputs=[args.path])
    ds = load_split(args.path, args.split, num_points=args.num_points)
    save_preview(ds, args.out, per_class=args.per_class)
    print(f"wrote {args.out}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from pointkd.data.convert import convert

    report = convert(args.src, args.dst, splits=args.split, num_points=args.num_points)
    for split, r in report.items():
        print(f"{split}: {r['shapes']} shapes x {r['points']} points -> {r['file']}")
        print(f"  fingerprint {r['fingerprint']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if (code := _relaunch(args)) is not None:
        return code
    cfg = _run_config(args, {"model.name": args.model})
    _say_data(cfg, _data_source(args, cfg))
    return _train(cfg, args)


def cmd_distill(args: argparse.Namespace) -> int:
    if (code := _relaunch(args)) is not None:
        return code
    extra: dict[str, object] = {
        "model.name": args.student,
        "distill.records": args.records[0] if args.records else None,
        "distill.extra_records": args.records[1:] if args.records and len(args.records) > 1
        else None,
        "distill.teacher": args.teacher,
        "distill.online": True if args.online else None,
        "distill.alpha": args.alpha,
        "distill.beta": args.beta,
        "distill.tau": args.tau,
    }
    cfg = _run_config(args, extra)
    from pointkd.stages.train import data_source

    source = data_source(cfg) or _data_source(args, cfg)
    _say_data(cfg, source)
    return _train(cfg, args)


def cmd_eval(args: argparse.Namespace) -> int:
    from pointkd.config.stages import EvalConfig
    from pointkd.stages import evaluate

    _set_threads(args.threads)
    evaluation = evaluate.run(EvalConfig(
        checkpoints=args.checkpoint, data=args.data, split=args.split, out=args.out,
        device=args.device, votes=args.votes, batch_size=args.batch_size,
        latency=not args.no_latency, overwrite=args.overwrite,
    ))
    print(evaluation.text())
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    if (code := _relaunch(args)) is not None:
        return code

    from pointkd.config.run import augment_spec
    from pointkd.config.stages import RecordConfig
    from pointkd.stages import record

    _set_threads(args.threads)
    result = record.run(RecordConfig(
        teachers=args.teacher, data=args.data, out=args.out, k=args.k, seed=args.seed,
        logits=args.logits, topk=args.topk, combine=args.combine, votes=args.votes,
        unlabelled=args.unlabelled,
        batch_size=args.batch_size,
        device=args.device, resume=args.resume, overwrite=args.overwrite,
        augment=augment_spec(args.config), progress=not args.no_progress,
        weights=args.weights or [], class_names=args.class_names,
        teacher_normalization=args.teacher_normalization,
    ))
    if result is not None:
        print(result.text())
    return 0


def cmd_records_info(args: argparse.Namespace) -> int:
    from pointkd.records import info

    print(info(args.dir))
    return 0


def cmd_records_verify(args: argparse.Namespace) -> int:
    from pointkd.stages.records import verify

    print(verify(args.dir, data=args.data, teachers=args.teacher, config=args.config,
                 weights=args.weights))
    return 0


def cmd_records_stats(args: argparse.Namespace) -> int:
    import json

    from pointkd.records.stats import record_stats

    stats = record_stats(args.dir, data=args.data)
    print(json.dumps(stats.to_dict(), indent=1) if args.json else stats.text())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pointkd.stages.predict import iter_predictions

    _set_threads(args.threads)
    results, failed = [], 0
    for r in iter_predictions(args.checkpoint, args.files, topk=args.topk,
                              batch_size=args.batch_size, device=args.device,
                              progress=not args.no_progress, min_points=args.min_points):
        results.append(r)
        if "error" in r:  # a bad file is reported and does not stop the rest
            failed += 1
            print(f"pointkd: error: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}"
                                               for t in r["top"]))
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from pointkd import rundir
    from pointkd.stages.export import export_onnx

    rundir.check_output_file(args.onnx, args.overwrite, inputs=[args.checkpoint],
                             option="--onnx")
    _set_threads(args.threads)
    report = export_onnx(args.checkpoint, args.onnx, opset=args.opset,
                         check_data=args.check_data, check_count=args.check_count,
                         device=args.device, sampler=args.sampler)
    points = "any number of points" if report["dynamic_points"] else (
        f"exactly {report['num_points']} points")
    line = (f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB, opset {report['opset']}; "
            f"input (batch, points, 3) unit-sphere normalised, {points})")
    if "parity" in report:
        p = report["parity"]
        line += (f"; parity on {p['clouds']} clouds: max |diff| {p['max_abs_diff']:.2e}, "
                 f"argmax agreement {100 * p['argmax_agreement']:.2f}%")
    print(line)
    if "sampler" in report:
        sm = report["sampler"]
        cost = (f": accuracy on the check clouds {100 * sm['check_oa_exported']:.2f}% vs "
                f"{100 * sm['check_oa_trained']:.2f}% as trained, top-1 agreement "
                f"{100 * sm['top1_agreement_with_trained']:.2f}%"
                if "check_oa_exported" in sm else " (--check-data measures what it costs)")
        print(f"sampler {sm['exported']} instead of {sm['trained']}{cost}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pointkd.stages.demo import run_demo

    _set_threads(args.threads)
    run_demo(args.out, quick=args.quick, config=args.config, data=args.data,
             epochs=args.epochs, device=args.device, overrides=args.overrides)
    return 0


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

    # data
    p_data = sub.add_parser("data", help="inspect, preview and convert datasets")
    data_sub = p_data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_sub.add_parser("info", help="per-class counts, points per shape, bounds, fingerprint")
    p.add_argument("path", help="HDF5 folder, class-folder dataset, or 'synthetic'")
    p.add_argument("--split", nargs="+", default=["train", "test"], help="splits to describe")
    p.add_argument("--num-points", type=int_at_least(1), default=None,
                   help="points per shape (folder/synthetic datasets; default 1024)")
    p.set_defaults(func=cmd_data_info)
    p = data_sub.add_parser("preview", help="save a PNG grid of sample clouds")
    p.add_argument("path")
    p.add_argument("--split", default="train")
    p.add_argument("--out", default="preview.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--per-class", type=int_at_least(1), default=3)
    p.add_argument("--num-points", type=int_at_least(1), default=None)
    p.set_defaults(func=cmd_data_preview)
    p = data_sub.add_parser("convert", help="write any readable dataset as pointkd HDF5 "
                            "(<split>.h5 + shape_names.txt); prints each split's fingerprint")
    p.add_argument("src", help="HDF5, class folders (e.g. ModelNet40 .off), "
                   "modelnet40_normal_resampled, ScanObjectNN h5, or 'synthetic'")
    p.add_argument("dst", help="new or empty output folder")
    p.add_argument("--split", nargs="+", default=["train", "test"], help="splits to convert")
    p.add_argument("--num-points", type=int, default=None,
                   help="points per shape (default: all for HDF5, 1024 for files)")
    p.set_defaults(func=cmd_data_convert)

    # train
    p = sub.add_parser("train", help="train a model (teacher or plain student)")
    p.add_argument("--model", help="model name (see `pointkd models`)")
    _add_run_options(p)
    p.set_defaults(func=cmd_train)

    # distill
    p = sub.add_parser("distill", help="train a student from records (offline) or teacher (online)")
    p.add_argument("--student", help="student model name")
    p.add_argument("--records", action="append",
                   help="record-set directory (offline KD); repeat to add record sets over "
                   "other shapes, e.g. unlabelled ones (distill.extra_records)")
    p.add_argument("--teacher", help="teacher checkpoint (online KD, with --online)")
    p.add_argument("--online", action="store_true", help="classic online KD, teacher in memory")
    p.add_argument("--alpha", type=finite_float, help="KD weight (distill.alpha)")
    p.add_argument("--beta", type=finite_float, help="NWSD weight, negative (distill.beta)")
    p.add_argument("--tau", type=finite_float, help="temperature (distill.tau)")
    _add_run_options(p)
    p.set_defaults(func=cmd_distill)

    # eval
    p = sub.add_parser("eval", help="OA, mAcc, per-class, confusion, params, FLOPs, latency")
    p.add_argument("checkpoint", nargs="+",
                   help="checkpoint; several = their ensemble (mean logits, as `record` stores)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="directory for metrics JSON and confusion PNG")
    _add_compute_options(p)
    p.add_argument("--votes", type=int_at_least(0), default=0,
                   help="extra multi-view votes (0 = off)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier eval_<split>.json / confusion_<split>.png in --out")
    p.set_defaults(func=cmd_eval)

    # record
    p = sub.add_parser("record", help="run the teacher once over K augmented copies; store logits")
    p.add_argument("--teacher", action="append", required=True,
                   help="pointkd checkpoint, model.onnx, or package.module:factory / "
                   "file.py:factory (with --weights); repeat for several teachers")
    p.add_argument("--weights", action="append",
                   help="weights of a module:factory teacher (torch.load weights_only, or "
                   ".safetensors); one per such teacher, in order")
    p.add_argument("--class-names", help="file: the teacher's classes, one a line, in its "
                   "output order (for teachers that do not carry names)")
    p.add_argument("--teacher-normalization",
                   choices=["pointkd", "unit_sphere", "unit_cube", "none"],
                   help="input normalisation of ONNX/module teachers that declare none "
                   "(default pointkd: unit sphere, then augmented)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int_at_least(1), default=10,
                   help="augmented copies per training shape")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--logits", choices=["fp32", "fp16", "int8"], default="int8")
    p.add_argument("--topk", type=int_at_least(0), default=0,
                   help="store only the top-k logits (0 = all)")
    p.add_argument("--combine", choices=["mean", "each"], default="mean",
                   help="several teachers: store their mean logits, or each one's")
    p.add_argument("--votes", type=int_at_least(0), default=0,
                   help="store each teacher's mean logits over the replayed cloud and N "
                   "rescaled views of it (multi-view voting; 0 = off; costs N+1 forwards)")
    p.add_argument("--unlabelled", action="store_true",
                   help="withhold the data's labels from students: these rows get the KD "
                   "terms only (distill them beside a labelled set: --records A --records B)")
    p.add_argument("--config", help="YAML config whose `augment` section sets the spec")
    p.add_argument("--batch-size", type=int_at_least(1), default=64)
    _add_compute_options(p)
    p.add_argument("--resume", action="store_true", help="continue the recording in OUT")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the record set in OUT (only its own files)")
    p.add_argument("--no-progress", action="store_true")
    _add_nproc(p)
    p.set_defaults(func=cmd_record)

    # records
    p_rec = sub.add_parser("records", help="inspect and verify record sets")
    rec_sub = p_rec.add_subparsers(dest="records_command", metavar="ACTION", required=True)
    p = rec_sub.add_parser("info", help="rows, K, bytes per row, size, teachers, spec")
    p.add_argument("dir")
    p.set_defaults(func=cmd_records_info)
    p = rec_sub.add_parser("verify", help="re-check checksums, sizes, dataset, teacher")
    p.add_argument("dir")
    p.add_argument("--data", help="dataset the records must have been made for")
    p.add_argument("--teacher", action="append",
                   help="teacher(s) it must match: checkpoint, .onnx, or module:factory")
    p.add_argument("--weights", action="append", help="weights of module:factory teachers")
    p.add_argument("--config", help="YAML config whose augment section the records must match")
    p.set_defaults(func=cmd_records_verify)
    p = rec_sub.add_parser("stats", help="teacher accuracy, softness at each tau, view spread")
    p.add_argument("dir")
    p.add_argument("--data", help="dataset for the labels (default: the one the manifest names)")
    p.add_argument("--json", action="store_true", help="print the stats as JSON")
    p.set_defaults(func=cmd_records_stats)

    # models
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("--classes", "--num-classes", dest="num_classes", type=int_at_least(2),
                   default=40,
                   help="number of classes the counts are for (default 40, as ModelNet40)")
    p.set_defaults(func=cmd_models)

    # predict / export
    p = sub.add_parser("predict", help="classify point-cloud files (.npy .xyz .txt .pcd .ply .off)")
    p.add_argument("checkpoint")
    p.add_argument("files", nargs="+", help="files, folders or glob patterns")
    p.add_argument("--topk", type=int_at_least(1), default=3)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--min-points", type=int_at_least(1),
                   help="a point file with fewer points is an error (default 16; meshes are "
                   "sampled on their surface)")
    _add_compute_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="export to ONNX (dynamic batch, and point count where "
                       "the model allows) with a parity check")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", required=True, help="output .onnx path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --onnx file")
    p.add_argument("--opset", type=int_at_least(7), default=18)
    p.add_argument("--check-data", help="dataset whose test split is used for the parity check")
    p.add_argument("--check-count", type=int_at_least(1), default=256)
    p.add_argument("--sampler", choices=["fps", "fps_coarse", "first"],
                   help="students: export with this anchor sampler instead of the trained one "
                   "(faster in ONNX Runtime, less accurate; 'first' needs points in random "
                   "order); with --check-data the cost is printed")
    _add_compute_options(p, default_device="cpu")
    p.set_defaults(func=cmd_export)

    # demo
    p = sub.add_parser("demo", help="the whole pipeline on the synthetic dataset in a few "
                       "minutes; with --data, distil from the zoo's ModelNet40 records")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--data", help="ModelNet40 (HDF5 folder): distill a student from the "
                   "committed zoo record set and compare it with no KD (~1 h on 2 cores)")
    p.add_argument("--config", help="preset (default: configs/synthetic_demo.yaml, or "
                   "configs/modelnet40_distill_cpu.yaml with --data)")
    p.add_argument("--epochs", type=int, help="epochs per run instead of the preset's "
                   "(a shorter check, not the measured protocol)")
    p.add_argument("--quick", action="store_true", help="tiny budget (for tests)")
    _add_compute_options(p, default_device=None)
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="dotted overrides for every run, e.g. train.max_steps_per_epoch=20")
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    from pointkd.models import create_model, list_models

    print(f"parameters with a {args.num_classes}-class head (--classes N for another count)")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:24s} {n / 1e6:8.3f}M params")
    return 0


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
