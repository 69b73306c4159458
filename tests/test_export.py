"""Shipping a student: `pointkd predict` on files, `pointkd export --onnx` with parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from pointkd.checkpoint import save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model
from pointkd.stages.export import check_parity, export_onnx


def make_ckpt(path, num_points=256, num_classes=12, names=None, **kwargs):
    torch.manual_seed(0)
    model = create_model("student_xs", num_classes, **kwargs).eval()
    names = names or load_split("synthetic:version=1,train_per_class=1", "train", 32).class_names
    save_checkpoint({"model": "student_xs", "model_kwargs": kwargs, "num_classes": num_classes,
                     "class_names": names, "num_points": num_points,
                     "state_dict": model.state_dict()}, path)
    return path


def write_cloud_files(d):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 3))
    np.save(d / "a.npy", pts)
    np.savetxt(d / "b.xyz", pts)
    with open(d / "c.pcd", "w") as f:
        f.write("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 400\n"
                "HEIGHT 1\nPOINTS 400\nDATA ascii\n")
        np.savetxt(f, pts)
    trimesh.creation.icosphere().export(d / "d.ply")
    trimesh.creation.box().export(d / "e.off")
    return sorted(d.iterdir())


def test_predict_files_text_and_json(cli, tmp_path):
    ckpt = make_ckpt(tmp_path / "m.pt")
    files = tmp_path / "clouds"
    files.mkdir()
    write_cloud_files(files)
    code, out, err = cli("predict", ckpt, files, "--topk", "2")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 5 and "d.ply:" in out
    code, out, _ = cli("predict", ckpt, str(files / "*.o*"), str(files / "a.npy"), "--json")
    result = json.loads(out)
    assert code == 0 and len(result) == 2 and len(result[0]["top"]) == 3
    assert abs(sum(t["prob"] for t in result[0]["top"])) <= 1.0 + 1e-6


def test_predict_reports_bad_files_and_continues(cli, tmp_path):
    ckpt = make_ckpt(tmp_path / "m.pt")
    good = tmp_path / "ok.xyz"
    np.savetxt(good, np.random.default_rng(0).normal(size=(50, 3)))
    bad = tmp_path / "bad.pcd"
    bad.write_text("VERSION .7\nnonsense\n")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((10, 3), np.nan))
    code, out, err = cli("predict", ckpt, good, bad, nan)
    assert code == 1 and "ok.xyz:" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("pointkd: error:") for line in lines)
    assert "bad.pcd" in lines[0] and "nan.npy" in lines[1] and "Traceback" not in err
    code, _, err = cli("predict", ckpt, tmp_path / "nothing*.ply")
    assert code == 2 and "no files match" in err


def test_export_onnx_parity_cli(cli, tmp_path):
    ckpt = make_ckpt(tmp_path / "m.pt")
    code, out, err = cli("export", ckpt, "--onnx", tmp_path / "m.onnx", "--check-data",
                         "synthetic:version=1,test_per_class=5", "--check-count", "50")
    assert code == 0, err
    assert "argmax agreement 100.00%" in out and (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("sampler", ["first", "fps_coarse"])
def test_export_with_a_cheaper_sampler_says_what_it_costs(cli, tmp_path, sampler):
    """--sampler: the graph runs the chosen sampler (parity against PyTorch with that
    sampler), the metadata says so, and the report compares it with the trained one."""
    import onnx

    ckpt = make_ckpt(tmp_path / "m.pt")
    code, out, err = cli("export", ckpt, "--onnx", tmp_path / "m.onnx", "--sampler", sampler,
                         "--check-data", "synthetic:version=1,test_per_class=5",
                         "--check-count", "50")
    assert code == 0, err
    assert "argmax agreement 100.00%" in out
    assert f"sampler {sampler} instead of fps: accuracy on the check clouds" in out
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["sampler"] == f"{sampler} (trained with fps)"
    assert props["points_order"].startswith("random")  # its anchors are the first points
    fps_nodes = len(onnx.load(str(export_onnx(str(ckpt), str(tmp_path / "f.onnx"))["onnx"]))
                    .graph.node)
    assert len(onnx.load(str(tmp_path / "m.onnx")).graph.node) < fps_nodes  # fewer FPS steps


def test_export_metadata_names_the_trained_sampler_and_the_points_order_it_needs(tmp_path):
    """A student trained with `first` (the fast ONNX graph) says in its metadata that its
    input must be in random order; an FPS student does not depend on the order."""
    import onnx

    def props(ckpt):
        path = export_onnx(str(ckpt), str(ckpt.with_suffix(".onnx")))["onnx"]
        return {p.key: p.value for p in onnx.load(str(path)).metadata_props}

    first = props(make_ckpt(tmp_path / "first.pt", sampler="first"))
    assert first["sampler"] == "first" and first["points_order"].startswith("random")
    fps = props(make_ckpt(tmp_path / "fps.pt"))
    assert fps["sampler"] == "fps" and "points_order" not in fps


def test_export_sampler_is_refused_for_models_without_one(cli, tmp_path):
    torch.manual_seed(0)
    model = create_model("pointnet", 12).eval()
    save_checkpoint({"model": "pointnet", "model_kwargs": {}, "num_classes": 12,
                     "class_names": [str(i) for i in range(12)], "num_points": 256,
                     "state_dict": model.state_dict()}, tmp_path / "m.pt")
    code, out, err = cli("export", tmp_path / "m.pt", "--onnx", tmp_path / "m.onnx",
                         "--sampler", "first")
    assert code == 2 and "has no anchor sampler" in err and err.count("\n") <= 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_parity_on_real_modelnet40_clouds(modelnet_path, tmp_path):
    ds = load_split(modelnet_path, "test")
    ckpt = make_ckpt(tmp_path / "m.pt", num_points=1024, num_classes=40,
                     names=ds.class_names)
    report = export_onnx(str(ckpt), str(tmp_path / "m.onnx"))
    model = create_model("student_xs", 40)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    parity = check_parity(model.eval(), report["onnx"], ds.points[:96])
    assert parity["max_abs_diff"] <= 1e-4 and parity["argmax_agreement"] >= 0.999


@pytest.mark.parametrize("name", ["pointnet", "pointnet_tnet", "student_s"])
def test_other_models_export(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, 12).eval()
    save_checkpoint({"model": name, "model_kwargs": {}, "num_classes": 12,
                     "class_names": [str(i) for i in range(12)], "num_points": 256,
                     "state_dict": model.state_dict()}, tmp_path / "m.pt")
    report = export_onnx(str(tmp_path / "m.pt"), str(tmp_path / "m.onnx"))
    x = (np.random.default_rng(0).random((5, 256, 3)) * 2 - 1).astype(np.float32)
    assert check_parity(model, report["onnx"], x)["max_abs_diff"] <= 1e-4


def test_predict_files_returns_results_and_prints_nothing(tmp_path, capsys):
    from pointkd.stages.predict import predict_files

    ckpt = make_ckpt(tmp_path / "m.pt")
    good = tmp_path / "ok.xyz"
    np.savetxt(good, np.random.default_rng(0).normal(size=(50, 3)))
    (tmp_path / "bad.xyz").write_text("not a number\n")
    results = predict_files(str(ckpt), [str(tmp_path / "bad.xyz"), str(good)], topk=2,
                            device="cpu", progress=False)
    assert capsys.readouterr() == ("", "")
    assert [r["file"] for r in results] == [str(tmp_path / "bad.xyz"), str(good)]
    assert "bad.xyz" in results[0]["error"] and "top" not in results[0]
    assert [t["index"] for t in results[1]["top"]] != [] and len(results[1]["top"]) == 2
