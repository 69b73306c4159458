"""Bad input: every case is a one-line `pointkd: error:` on stderr, exit code 2, no traceback."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import run_cli_subprocess


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


def case_missing_label_dataset(tmp):
    with h5py.File(tmp / "train.h5", "w") as f:
        f["data"] = good()[0]
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
         case_label_count_mismatch, case_missing_label_dataset, case_truncated_hdf5,
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
