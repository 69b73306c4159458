"""Bad input: every case is a one-line `pointkd: error:` on stderr, exit code 2, no traceback."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import run_cli_subprocess

from pointkd.cli import main as cli_main


def write_h5(path, points, labels):
    with h5py.File(path, "w") as f:
        f["data"] = points
        f["label"] = labels


def good(n=6, p=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, p, 3)).astype(np.float32), (np.arange(n) % 3).reshape(-1, 1)


def case_missing(tmp):
    return tmp / "does_not_exist"


def case_empty_file(tmp):
    (tmp / "train.h5").write_bytes(b"")
    return tmp


def case_nan(tmp):
    pts, lab = good()
    pts[2, 5, 1] = np.nan
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_inf(tmp):
    pts, lab = good()
    pts[0, 0, 0] = np.inf
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_wrong_dims(tmp):
    pts, lab = good()
    write_h5(tmp / "train.h5", pts[..., :2], lab)
    return tmp


def case_label_out_of_range(tmp):
    pts, lab = good()
    lab[1] = 7
    (tmp / "shape_names.txt").write_text("a\nb\nc\n")
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_class_count_mismatch(tmp):
    pts, lab = good()
    (tmp / "shape_names.txt").write_text("a\nb\n")  # labels go up to 2
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_label_count_mismatch(tmp):
    pts, lab = good()
    write_h5(tmp / "train.h5", pts, lab[:4])
    return tmp


def case_truncated_hdf5(tmp):
    pts, lab = good(n=200, p=64)
    write_h5(tmp / "full.h5", pts, lab)
    data = (tmp / "full.h5").read_bytes()
    (tmp / "full.h5").unlink()
    (tmp / "train.h5").write_bytes(data[: len(data) // 2])
    return tmp


def case_unreadable_mesh(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "x.off").write_text("OFF\n3 1 0\n0 0 0\n1 0\n")  # truncated vertex list
    return tmp


def case_point_file_no_points(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "x.xyz").write_text("# header only\n")
    return tmp


def case_unknown_extension(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "x.stl").write_text("solid")
    return tmp


def case_corrupt_npy(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "y.npy").write_bytes(b"not numpy")
    return tmp


def case_point_file_wrong_dims(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    np.save(d / "flat.npy", np.zeros((10, 2)))
    return tmp


def case_zero_area_mesh(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "x.off").write_text("OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n")  # collinear
    return tmp


def case_pcd_without_z(tmp):
    d = tmp / "chair" / "train"
    d.mkdir(parents=True)
    (d / "x.pcd").write_text("FIELDS x y\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nPOINTS 1\n"
                             "DATA ascii\n1 2\n")
    return tmp


def case_points_2d(tmp):
    pts, lab = good()
    write_h5(tmp / "train.h5", pts[..., 0], lab)  # (N, P)
    return tmp


def case_negative_label(tmp):
    pts, lab = good()
    lab = lab.astype(np.int64)
    lab[3] = -1
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_missing_data_dataset(tmp):
    # (without `label` an HDF5 is a pool of shapes without labels: tests/test_unlabelled_sources)
    with h5py.File(tmp / "train.h5", "w") as f:
        f["label"] = good()[1]
    return tmp


def case_no_such_split(tmp):
    pts, lab = good()
    write_h5(tmp / "test.h5", pts, lab)  # asked for train only
    return tmp


def case_not_a_dataset_file(tmp):
    np.save(tmp / "cloud.npy", np.zeros((5, 3)))
    return tmp / "cloud.npy"


def case_bad_synthetic_option(tmp):
    return "synthetic:per_klass=3"


CASES = [case_missing, case_empty_file, case_nan, case_inf, case_wrong_dims, case_points_2d,
         case_label_out_of_range, case_negative_label, case_class_count_mismatch,
         case_label_count_mismatch, case_missing_data_dataset, case_truncated_hdf5,
         case_unreadable_mesh, case_zero_area_mesh, case_point_file_no_points,
         case_point_file_wrong_dims, case_unknown_extension, case_corrupt_npy,
         case_pcd_without_z, case_no_such_split, case_not_a_dataset_file,
         case_bad_synthetic_option]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_data_is_a_one_line_error(cli, tmp_path, case):
    path = case(tmp_path)
    code, out, err = cli("data", "info", path, "--split", "train")
    assert code == 2, (out, err)
    assert err.startswith("pointkd: error:") and err.count("\n") == 1 and "Traceback" not in err
    if case is not case_bad_synthetic_option:
        assert str(tmp_path) in err  # names the offending file


def test_bad_checkpoint_and_bad_model(cli, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    code, _, err = cli("eval", tmp_path / "x.pt", "--data", "synthetic")
    assert code == 2 and "cannot read checkpoint" in err
    code, _, err = cli("train", "--model", "nosuchnet", "--data", "synthetic",
                       "--out", tmp_path / "r", "train.epochs=1")
    assert code == 2 and "unknown model" in err


def test_no_traceback_in_a_real_process(tmp_path):
    proc = run_cli_subprocess("data", "info", case_nan(tmp_path), "--split", "train",
                              timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pointkd: error:") and "NaN" in proc.stderr


# ---- issue 19: every class of bad input, through the CLI ----------------------------------

PLY_HEAD = "ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\n" \
           "property float z\n"
PCD_HEAD = "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\n" \
           "HEIGHT 1\nPOINTS {n}\nDATA ascii\n"


def rows(n=30):
    return "".join(f"{i} {i % 3} {i % 5}\n" for i in range(n))


def npy_bad_header(path):
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100, 3"  # never closed
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header + b"\n").to_bytes(2, "little")
                     + header + b"\n")


POINT_FILES = {  # name -> (writer, expected message)
    "beyond_f32.npy": (lambda p: np.save(p, np.full((40, 3), 1e300)), "float32 range"),
    "beyond_f32.txt": (lambda p: p.write_text("1e300 0 0\n" * 40), "float32 range"),
    "beyond_f32.off": (lambda p: p.write_text("OFF\n3 1 0\n0 0 0\n1e300 0 0\n0 1 0\n3 0 1 2\n"),
                       "float32 range"),
    "complex.npy": (lambda p: np.save(p, np.ones((40, 3)) * (1 + 1j)), "complex"),
    "bad_header.npy": (npy_bad_header, "not a readable numeric .npy"),
    "one_point.npy": (lambda p: np.save(p, np.ones((1, 3))), "minimum 16"),
    "more_rows.ply": (lambda p: p.write_text(PLY_HEAD.format(n=20) + "end_header\n" + rows()),
                      "announces 20 rows"),
    "fewer_rows.ply": (lambda p: p.write_text(PLY_HEAD.format(n=40) + "end_header\n" + rows()),
                       "announces 40 rows"),
    "face_minus_one.ply": (lambda p: p.write_text(
        PLY_HEAD.format(n=3) + "element face 1\nproperty list uchar int vertex_indices\n"
        "end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 -1\n"), "face index -1"),
    "more_points.pcd": (lambda p: p.write_text(PCD_HEAD.format(n=20) + rows()),
                        "announces 20 points"),
    "negative.off": (lambda p: p.write_text("OFF\n-3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"),
                     "negative counts"),
    "two_vertex_face.off": (lambda p: p.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n"),
                            "needs >= 3"),
    "face_outside.off": (lambda p: p.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"),
                         "outside 0..2"),
}


@pytest.mark.parametrize("name", sorted(POINT_FILES))
def test_bad_point_files_are_one_line_errors(cli, tmp_path, name):
    """Finite float64 beyond float32, counts that disagree with the data, complex numbers,
    broken headers, faces that do not exist, too few points: refused in datasets and in
    `predict`, where the path is named once (not `P: P: msg`)."""
    write, message = POINT_FILES[name]
    d = tmp_path / "chair" / "train"
    d.mkdir(parents=True)
    write(d / name)
    code, _, err = cli("data", "info", tmp_path, "--split", "train")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.count(str(d / name)) == 1, err
    code, out, err = cli("predict", checkpoint(tmp_path / "m.pt"), d / name, "--json")
    assert code == 1 and "nan" not in out.lower(), out
    assert err.count("\n") == 1 and err.count(str(d / name)) == 1 and message in err, err


def test_min_points_is_an_option(cli, tmp_path):
    np.save(tmp_path / "few.npy", np.random.default_rng(0).normal(size=(5, 3)))
    code, _, err = cli("predict", checkpoint(tmp_path / "m.pt"), tmp_path / "few.npy")
    assert code == 1 and "5 point(s), fewer than the minimum 16" in err
    code, out, err = cli("predict", checkpoint(tmp_path / "m.pt"), tmp_path / "few.npy",
                         "--min-points", "5")
    assert code == 0 and err == "" and "few.npy:" in out


def case_duplicate_shape_names(tmp):
    pts, lab = good()
    (tmp / "shape_names.txt").write_text("a\nb\na\n")
    write_h5(tmp / "train.h5", pts, lab)
    return tmp


def case_empty_class_folder(tmp):
    np.save(_folder(tmp, "chair") / "x.npy", good()[0][0])
    (tmp / "empty_class").mkdir()
    return tmp


def case_split_is_a_file(tmp):
    np.save(_folder(tmp, "chair") / "x.npy", good()[0][0])
    (tmp / "table").mkdir()
    (tmp / "table" / "train").write_text("not a folder")
    return tmp


def case_empty_split_folder(tmp):
    np.save(_folder(tmp, "chair") / "x.npy", good()[0][0])
    (tmp / "table" / "train").mkdir(parents=True)
    return tmp


def case_symlink_loop(tmp):
    np.save(_folder(tmp, "chair") / "x.npy", good()[0][0])
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp


def _folder(tmp, name):
    d = tmp / name / "train"
    d.mkdir(parents=True)
    return d


DATASET_CASES = [case_duplicate_shape_names, case_empty_class_folder, case_split_is_a_file,
                 case_empty_split_folder, case_symlink_loop]


@pytest.mark.parametrize("case", DATASET_CASES, ids=[c.__name__[5:] for c in DATASET_CASES])
def test_bad_datasets_are_one_line_errors(cli, tmp_path, case):
    """Issue 19, class 5: these used to become an (empty or renumbered) class silently."""
    code, out, err = cli("data", "info", case(tmp_path), "--split", "train")
    assert code == 2 and err.startswith("pointkd: error:") and err.count("\n") == 1, (out, err)
    assert str(tmp_path) in err


def checkpoint(path, **change):
    """A small valid student_xs checkpoint (12 synthetic classes), with `change` applied."""
    import torch

    from pointkd.checkpoint import save_checkpoint
    from pointkd.data import load_split
    from pointkd.models import create_model

    names = load_split("synthetic:version=1,train_per_class=1,test_per_class=1", "train",
                       8).class_names
    torch.manual_seed(0)
    state = {"model": "student_xs", "model_kwargs": {}, "num_classes": 12,
             "class_names": names, "num_points": 32,
             "state_dict": create_model("student_xs", 12).state_dict()}
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value(state[key]) if callable(value) else value
    save_checkpoint(state, path)
    return path


def _scaled(factor):
    return lambda sd: {k: v * factor if v.is_floating_point() else v for k, v in sd.items()}


BAD_CHECKPOINTS = {
    "no_class_names": ({"class_names": None}, "'class_names' must be a list of 12"),
    "class_names_not_list": ({"class_names": "abc"}, "'class_names' must be a list"),
    "duplicate_class_names": ({"class_names": ["a"] * 12}, "duplicates"),
    "no_num_classes": ({"num_classes": None}, "'num_classes' must be an integer"),
    "num_classes_string": ({"num_classes": "12"}, "'num_classes' must be an integer"),
    "state_dict_list": ({"state_dict": [1, 2]}, "'state_dict' must map"),
    "absurd_num_points": ({"num_points": 10**12}, "'num_points' must be an integer in"),
    "zero_num_points": ({"num_points": 0}, "'num_points' must be an integer in"),
    "kwargs_repeat_num_classes": ({"model_kwargs": {"num_classes": 3}}, "repeats num_classes"),
    "nan_weights": ({"state_dict": _scaled(float("nan"))}, "not finite"),
}


@pytest.mark.parametrize("name", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_one_line_errors(cli, tmp_path, name):
    change, message = BAD_CHECKPOINTS[name]
    ckpt = checkpoint(tmp_path / f"{name}.pt", **change)
    np.save(tmp_path / "cloud.npy", good(1, 64)[0][0])
    for args in (["predict", ckpt, tmp_path / "cloud.npy", "--json"],
                 ["eval", ckpt, "--data", "synthetic:version=1,train_per_class=1,test_per_class=1"],
                 ["export", ckpt, "--onnx", tmp_path / "m.onnx"]):
        code, out, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
        assert str(ckpt) in err and "nan" not in out.lower()
    assert not (tmp_path / "m.onnx").exists()


def test_non_finite_outputs_are_never_printed(cli, tmp_path):
    """Finite weights can still overflow to inf: predict/eval/export refuse to report it."""
    ckpt = checkpoint(tmp_path / "huge.pt", state_dict=_scaled(1e30))
    np.save(tmp_path / "cloud.npy", good(1, 64)[0][0])
    data = "synthetic:version=1,train_per_class=1,test_per_class=1"
    for args in (["predict", ckpt, tmp_path / "cloud.npy", "--json"],
                 ["eval", ckpt, "--data", data, "--no-latency", "--out", tmp_path / "ev"],
                 ["export", ckpt, "--onnx", tmp_path / "m.onnx", "--check-data", data]):
        code, out, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and "non-finite outputs" in err, (args, err)
        assert "nan" not in out.lower() and "inf" not in out.lower(), out
    assert not (tmp_path / "ev" / "eval_test.json").exists()
    assert not list(tmp_path.glob("*onnx*")), "a failed export leaves no file behind"


def test_single_output_files_are_never_silently_replaced(cli, tmp_path):
    """`export --onnx` and `data preview --out` replace an existing file only with
    --overwrite, never write onto a directory or their own input."""
    ckpt = checkpoint(tmp_path / "ok.pt")
    precious = tmp_path / "precious.onnx"
    precious.write_text("a user's file")
    data = "synthetic:version=1,train_per_class=1,test_per_class=1"
    for args in (["export", ckpt, "--onnx", precious],
                 ["export", ckpt, "--onnx", tmp_path],
                 ["export", ckpt, "--onnx", ckpt],
                 ["data", "preview", data, "--num-points", "32", "--out", precious]):
        code, _, err = cli(*args)
        assert code == 2 and err.count("\n") == 1, (args, err)
    assert precious.read_text() == "a user's file" and ckpt.stat().st_size > 100
    code, _, err = cli("export", ckpt, "--onnx", precious, "--overwrite")
    assert code == 0, err
    assert precious.read_bytes()[:1] != b"a"


BAD_OPTIONS = [
    ["eval", "x.pt", "--data", "synthetic", "--batch-size", "0"],
    ["eval", "x.pt", "--data", "synthetic", "--votes", "-1"],
    ["predict", "x.pt", "y.npy", "--topk", "-1"],
    ["predict", "x.pt", "y.npy", "--batch-size", "0"],
    ["predict", "x.pt", "y.npy", "--min-points", "0"],
    ["record", "--teacher", "x.pt", "--data", "synthetic", "--out", "r", "--threads", "-1"],
    ["record", "--teacher", "x.pt", "--data", "synthetic", "--out", "r", "--k", "0"],
    ["record", "--teacher", "x.pt", "--data", "synthetic", "--out", "r", "--votes", "-2"],
    ["record", "--teacher", "x.pt", "--data", "synthetic", "--out", "r", "--topk", "-2"],
    ["record", "--teacher", "x.pt", "--data", "synthetic", "--out", "r", "--seed", "-1"],
    ["export", "x.pt", "--onnx", "m.onnx", "--check-count", "0"],
    ["export", "x.pt", "--onnx", "m.onnx", "--opset", "1"],
    ["train", "--epochs", "0"],
    ["train", "--epochs", "two"],
    ["train", "--seed", "-1"],
    ["distill", "--tau", "nan"],
    ["data", "info", "synthetic", "--num-points", "0"],
    ["models", "--num-classes", "0"],
    ["train", "--no-such-option"],
]


@pytest.mark.parametrize("args", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a in BAD_OPTIONS])
def test_bad_numbers_on_the_command_line_are_one_line_errors(capsys, args):
    with pytest.raises(SystemExit) as stop:
        cli_main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("pointkd: error:") and err.count("\n") == 1
    assert args[-2] in err or args[-1] in err, err


def test_bad_options_print_one_line_in_a_real_process():
    proc = run_cli_subprocess("eval", "x.pt", "--data", "synthetic", "--batch-size", "0",
                              timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("pointkd: error: argument --batch-size: must be >= 1, got 0 "
                           "(see `pointkd eval --help`)\n")


BAD_OVERRIDES = {
    "train.seed=-1": "'train.seed' must be >= 0",
    "train.batch_size=1": "'train.batch_size' must be >= 2",
    "train.batch_size=0": "'train.batch_size' must be >= 2",
    "train.max_steps_per_epoch=-1": "'train.max_steps_per_epoch' must be >= 0",
    "train.grad_clip=.nan": "'train.grad_clip' must be a finite number",
    "train.threads=-1": "'train.threads' must be >= 0",
    "optim.min_lr=-1": "'optim.min_lr' must be >= 0",
    "optim.warmup_epochs=-1": "'optim.warmup_epochs' must be >= 0",
    "optim.lr=.inf": "'optim.lr' must be a finite number",
    "augment.up_axis=3": "'augment.up_axis' must be one of 0, 1, 2",
    "distill.ema_decay=2": "'distill.ema_decay' must be < 1.0",
    "model.kwargs={num_classes: 3}": "must not set num_classes",
    "augment.subsample=5000": "augment.subsample = 5000 but the clouds have only 32 points",
}


@pytest.mark.parametrize("override", sorted(BAD_OVERRIDES))
def test_bad_overrides_are_one_line_errors(cli, tmp_path, override):
    code, _, err = cli("train", "--model", "student_xs", "--data",
                       "synthetic:version=1,train_per_class=2,test_per_class=1", "--out",
                       tmp_path / "r",
                       "data.num_points=32", "train.epochs=1", override)
    assert code == 2 and err.count("\n") == 1 and BAD_OVERRIDES[override] in err, err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_resume_with_another_model_is_refused(cli, tmp_path):
    data = "synthetic:version=1,train_per_class=2,test_per_class=1"
    common = ["--data", data, "--out", tmp_path / "r", "data.num_points=32",
              "train.batch_size=8", "train.progress=false", "--epochs"]
    assert cli("train", "--model", "student_xs", *common, "1")[0] == 0
    code, _, err = cli("train", "--model", "student_s", *common, "2", "--resume")
    assert code == 2 and err.count("\n") == 1 and "is a run of model student_xs" in err, err


def _records(tmp_path):
    """A tiny real record set (student_xs teacher) and the data it was made for."""
    from pointkd.config.stages import RecordConfig
    from pointkd.stages import record

    data = "synthetic:version=1,train_per_class=2,test_per_class=1"
    ckpt = checkpoint(tmp_path / "teacher.pt")
    out = record.run(RecordConfig(teachers=[str(ckpt)], data=data, out=str(tmp_path / "rec"), k=2,
                              batch_size=8, device="cpu", progress=False)).root
    return out, data


BAD_MANIFESTS = {  # name -> (change, message)
    "traversal": (lambda m: m["shards"][0].update(file="../outside.bin"), "not a plain shard"),
    "absolute": (lambda m: m["shards"][0].update(file="/etc/hostname"), "not a plain shard"),
    "k_zero": (lambda m: m.update(k=0), "'k' must be an integer >= 1"),
    "k_string": (lambda m: m.update(k="2"), "'k' must be an integer >= 1, got '2'"),
    "num_shapes_null": (lambda m: m["data"].update(num_shapes=None), "'num_shapes' must be"),
    "num_classes_other": (lambda m: m["data"].update(num_classes=7), "class_names' must list 7"),
    "rows_negative": (lambda m: m["shards"][0].update(rows=-1), "'rows' must be an integer"),
    "complete_string": (lambda m: m.update(complete="yes"), "'complete' must be true or false"),
    "no_teachers": (lambda m: m.update(teachers=[]), "'teachers' must list"),
    "votes_string": (lambda m: m["logits"].update(votes="4", vote_scale=[0.8, 1.25]),
                     "'logits.votes' must be an integer >= 1"),
    "votes_no_scale": (lambda m: m["logits"].update(votes=2), "'logits.vote_scale' [low, high]"),
}


def test_bad_manifests_are_one_line_errors(cli, tmp_path):
    """Issue 19, classes 4 and 6: the manifest schema, incl. shard names outside the set."""
    import json
    import shutil

    rec, data = _records(tmp_path)
    shutil.copy(rec / "shard-00000.bin", tmp_path / "outside.bin")  # a valid-looking target
    for name, (change, message) in BAD_MANIFESTS.items():
        bad = tmp_path / name
        shutil.copytree(rec, bad)
        m = json.loads((bad / "manifest.json").read_text())
        change(m)
        (bad / "manifest.json").write_text(json.dumps(m))
        for args in (["records", "verify", bad], ["records", "info", bad],
                     ["distill", "--records", bad, "--student", "student_xs", "--data", data,
                      "--out", tmp_path / f"s_{name}", "train.epochs=1"]):
            code, _, err = cli(*args)
            assert code == 2 and err.count("\n") == 1 and message in err, (name, args, err)
        assert not (tmp_path / f"s_{name}" / "last.pt").exists()
    code, _, err = cli("records", "verify", rec, "--teacher", tmp_path / "nope.pt")
    assert code == 2 and "teacher file not found or unreadable" in err and "nope.pt" in err
    # a plain shard name that is a symbolic link to a file outside the set
    linked = tmp_path / "linked"
    shutil.copytree(rec, linked)
    (linked / "shard-00000.bin").unlink()
    (linked / "shard-00000.bin").symlink_to(tmp_path / "outside.bin")
    for args in (["records", "verify", linked],
                 ["distill", "--records", linked, "--student", "student_xs", "--data", data,
                  "--out", tmp_path / "s_linked", "train.epochs=1"]):
        code, _, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and "symbolic link" in err, (args, err)


def test_library_warnings_never_reach_the_user(tmp_path):
    """Issue 19, class 7: a successful export used to print 14 warning lines, a failing one
    16 TracerWarnings (plus torch's IR dump) before its error."""
    ckpt = checkpoint(tmp_path / "m.pt")
    ok = run_cli_subprocess("export", ckpt, "--onnx", tmp_path / "m.onnx", timeout=300)
    assert ok.returncode == 0 and ok.stderr == "" and ok.stdout.startswith("wrote"), ok.stderr
    bad = run_cli_subprocess("export", ckpt, "--onnx", tmp_path / "b.onnx", "--opset", "7",
                             timeout=300)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout[:500]
    assert bad.stderr.startswith("pointkd: error:") and bad.stderr.count("\n") == 1, bad.stderr


def test_own_warnings_are_one_line(capsys):
    import warnings

    from pointkd.errors import PointKDWarning, quiet_warnings

    with quiet_warnings():
        warnings.warn("torch says\nmany things", UserWarning, stacklevel=1)
        warnings.warn("check your\ndata", PointKDWarning, stacklevel=1)
        np.float32(1e30) * np.float32(1e30)  # numpy RuntimeWarning: overflow
    assert capsys.readouterr().err == "pointkd: warning: check your data\n"


def test_loss_nan_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--model", "student_xs", "--data",
                       "synthetic:version=1,train_per_class=2,test_per_class=1", "--out",
                       tmp_path / "r",
                       "data.num_points=32", "train.epochs=1", "optim.lr=1e30",
                       "train.batch_size=8", "train.progress=false")
    assert code == 2 and err.count("\n") == 1 and "loss became nan" in err, err
