"""`pointkd records stats`: every number against a direct float64 computation of its
definition (docs/records.md, "Stats") on tiny record sets of the probe teacher, top-k rows
(tail mass), labels that are not at hand, --json, and the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_records import DATA, POINTS, expected_logits, make_teacher, rec

from pointkd.data import load_split
from pointkd.records import open_records, read_manifest
from pointkd.records import stats as stats_module
from pointkd.records.stats import record_stats

SCALE = 4.0  # the probe's logits x 4: peaked enough that views disagree on some shapes only
# the reader decodes to float32 (top-k's tail fill, the mean of several teachers are rounded
# there); everything after that is float64
TOL = dict(rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module")
def ds():
    return load_split(DATA, "train", num_points=POINTS)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, ds):
    """Record sets of one probe teacher (two for `each`), K = 3 unless named otherwise."""
    root = tmp_path_factory.mktemp("stats")
    one = make_teacher(root / "t.pt", ds, SCALE)
    two = make_teacher(root / "t2.pt", ds, SCALE / 2)
    return {
        "int8": rec(root / "int8", [one]),
        "fp32": rec(root / "fp32", [one], logits="fp32"),
        "top4": rec(root / "top4", [one], topk=4),
        "each": rec(root / "each", [one, two], combine="each", logits="fp16"),
        "k1": rec(root / "k1", [one], k=1),
    }


def _log_sum_exp(x: np.ndarray) -> np.ndarray:
    peak = x.max(-1, keepdims=True)
    return (peak + np.log(np.exp(x - peak).sum(-1, keepdims=True)))[..., 0]


def direct_probs(d: Path, tau: float) -> np.ndarray:
    """(K, N, C) float64 probabilities of softmax(z / tau), straight from the shard bytes:
    for top-k rows from the stored top values and tail log-sum-exp (each tail class holding
    an equal share of the tail), never through the reader's decoding."""
    m = read_manifest(d)
    rows = np.fromfile(d / "shard-00000.bin", dtype=open_records(d).dtype)
    k, n, c = m["k"], m["data"]["num_shapes"], m["data"]["num_classes"]
    lg = m["logits"]
    if lg["topk"]:
        kk = lg["topk"]
        top = rows["top_val"][:, 0].astype(np.float64) / tau  # (rows, kk)
        tail_one = (rows["rest_lse"][:, 0].astype(np.float64) - np.log(c - kk)) / tau
        total = _log_sum_exp(np.concatenate([top, (tail_one + np.log(c - kk))[:, None]], 1))
        p = np.repeat(np.exp(tail_one - total)[:, None], c, 1)
        p[np.arange(len(rows))[:, None], rows["top_idx"][:, 0].astype(np.int64)] = \
            np.exp(top - total[:, None])
    else:
        z = rows["logits"].astype(np.float64)
        if lg["encoding"] == "int8":
            z = z * rows["scale"].astype(np.float64)[..., None]
        z = z.mean(1) / tau  # the mean over stored teachers
        e = np.exp(z - z.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    return p.reshape(k, n, c)


def direct_stats(d: Path, labels: np.ndarray | None) -> dict:
    out = {}
    for tau in (1.0, 2.0, 4.0):
        p = direct_probs(d, tau)
        logp = np.log(np.where(p > 0, p, 1.0))
        out[tau] = (p.max(-1).mean(), -(p * logp).sum(-1).mean())
    p = direct_probs(d, 1.0)
    mean = p.mean(0, keepdims=True)  # arithmetic mean of the shape's K view probabilities
    kl = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / mean), 0.0).sum(-1)
    top1 = p.argmax(-1)
    out["kl"] = (kl.mean(), np.median(kl))
    out["changed"] = int(sum(len(set(top1[:, s])) > 1 for s in range(p.shape[1])))
    out["right"] = None if labels is None else int((top1 == labels[None]).sum())
    return out


@pytest.mark.parametrize("name", ["int8", "fp32", "top4", "each"])
def test_stats_are_their_definitions(sets, ds, name):
    d = sets[name]
    s = record_stats(d)
    want = direct_stats(d, ds.labels)
    m = read_manifest(d)
    assert (s.rows, s.shapes, s.k, s.classes) == (3 * len(ds), len(ds), 3, ds.num_classes)
    assert s.bytes_per_row == m["bytes_per_row"]
    assert s.total_bytes == (d / "shard-00000.bin").stat().st_size == s.rows * s.bytes_per_row
    assert s.labels == DATA and s.rows_right == want["right"]
    assert s.teacher_accuracy == pytest.approx(want["right"] / s.rows)
    assert [t.tau for t in s.taus] == [1.0, 2.0, 4.0]
    for t in s.taus:
        assert t.mean_top_prob == pytest.approx(want[t.tau][0], **TOL)
        assert t.mean_entropy_nats == pytest.approx(want[t.tau][1], **TOL)
    assert s.view_kl_mean_nats == pytest.approx(want["kl"][0], **TOL)
    assert s.view_kl_median_nats == pytest.approx(want["kl"][1], **TOL)
    assert s.top1_change_shapes == want["changed"]
    assert s.top1_change_fraction == pytest.approx(want["changed"] / len(ds))
    # the probe is sharp enough for a real spread: some shapes, not all, change their top-1
    assert 0 < s.top1_change_shapes < len(ds) and s.view_kl_mean_nats > 0
    assert s.uniform_entropy_nats == pytest.approx(np.log(ds.num_classes))
    if name == "each":
        assert s.teachers == 2 and "mean of 2 teachers" in s.encoding


def test_topk_tail_mass_counts(sets, ds):
    """Top-k rows: the top-1 probability is the teacher's own (up to float16), because the
    tail's log-sum-exp keeps the rest of the mass; a softmax over the k stored values alone
    would overstate it."""
    d = sets["top4"]
    s = record_stats(d)
    rs = open_records(d)
    batch = rs.rows(np.arange(len(rs)))
    true = expected_logits(ds, batch, rs.spec, SCALE).double()
    assert s.taus[0].mean_top_prob == pytest.approx(
        float(torch.softmax(true, 1).amax(1).mean()), abs=2e-3)
    top_only = torch.softmax(torch.from_numpy(
        rs.raw_rows(np.arange(len(rs)))["top_val"][:, 0].astype(np.float64)), 1).amax(1)
    assert float(top_only.mean()) > s.taus[0].mean_top_prob + 0.01
    # entropy: at least the teacher's (the tail spread evenly is the most uncertain split)
    p = torch.softmax(true, 1)
    assert s.taus[0].mean_entropy_nats >= float(-(p * p.log()).sum(1).mean()) - 2e-3


def test_chunks_do_not_change_the_numbers(sets, monkeypatch):
    whole = record_stats(sets["int8"]).to_dict()
    monkeypatch.setattr(stats_module, "CHUNK_VALUES", 50)  # one shape per chunk
    chunked = record_stats(sets["int8"]).to_dict()
    whole.pop("seconds"), chunked.pop("seconds")
    for key, value in chunked.items():
        if key == "taus":
            for x, y in zip(value, whole[key], strict=True):
                assert x == pytest.approx(y, rel=1e-12)
        elif isinstance(value, float):
            assert value == pytest.approx(whole[key], rel=1e-12), key
        else:
            assert value == whole[key], key


def test_one_view_per_shape_has_no_spread(sets):
    s = record_stats(sets["k1"])
    assert s.k == 1 and s.view_kl_mean_nats is None and s.top1_change_fraction is None
    assert "spread not available: K = 1" in s.text()


def test_cli_text_and_json(cli, sets, ds):
    d = sets["int8"]
    code, out, err = cli("records", "stats", d)
    assert code == 0 and err == ""
    s = record_stats(d)
    assert f"right on {100 * s.teacher_accuracy:.2f}% of rows" in out
    assert f"K 3 x {len(ds)} shapes" in out and "tau 4:" in out and "top-1 class changes" in out
    code, out, err = cli("records", "stats", d, "--json", "--data", DATA)
    assert code == 0 and err == ""
    got = json.loads(out)
    want = s.to_dict()
    for key in ("rows", "shapes", "k", "classes", "bytes_per_row", "total_bytes", "rows_right",
                "top1_change_shapes", "labels"):
        assert got[key] == want[key], key
    for key in ("teacher_accuracy", "view_kl_mean_nats", "view_kl_median_nats",
                "top1_change_fraction"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    assert [t["tau"] for t in got["taus"]] == [1.0, 2.0, 4.0]
    assert got["taus"][0]["mean_top_prob"] == pytest.approx(s.taus[0].mean_top_prob)
    assert "view_kl" in got["definitions"]


@pytest.mark.parametrize("path", ["gone", "other", "unlabelled"])
def test_labels_not_at_hand_are_not_an_error(cli, sets, tmp_path, path):
    """The manifest's dataset missing from here, another dataset there, or labels withheld
    from the set: no accuracy, the rest of the stats, exit 0."""
    d = tmp_path / "r"
    shutil.copytree(sets["int8"], d)
    m = json.loads((d / "manifest.json").read_text())
    if path == "unlabelled":  # `record --unlabelled`: the data is there, its labels withheld
        m["data"]["labels"] = False
    else:
        m["data"]["path"] = str(tmp_path / "gone") if path == "gone" else DATA + ",seed=3"
    (d / "manifest.json").write_text(json.dumps(m))
    s = record_stats(d)
    assert s.teacher_accuracy is None and s.rows_right is None and s.labels is None
    assert s.view_kl_mean_nats == pytest.approx(record_stats(sets["int8"]).view_kl_mean_nats)
    assert {"gone": "dataset not found", "other": "another dataset",
            "unlabelled": "recorded with --unlabelled"}[path] in s.labels_note
    code, out, err = cli("records", "stats", d)
    assert code == 0 and err == "" and "accuracy not available" in out and "--data" in out
    code, out, _ = cli("records", "stats", d, "--json")
    assert code == 0 and json.loads(out)["teacher_accuracy"] is None
    code, out, _ = cli("records", "stats", d, "--data", DATA)  # --data brings them back
    assert code == 0 and "right on" in out


def _break(d: Path, how: str) -> None:
    manifest = d / "manifest.json"
    if how == "not_json":
        manifest.write_text("{not json")
    elif how == "no_manifest":
        manifest.unlink()
    elif how == "incomplete":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    elif how == "truncated":
        shard = d / "shard-00000.bin"
        shard.write_bytes(shard.read_bytes()[:-7])


@pytest.mark.parametrize("how, args, message", [
    ("missing_dir", [], "record set not found"),
    ("no_manifest", [], "no manifest.json"),
    ("not_json", [], "not valid JSON"),
    ("incomplete", [], "incomplete"),
    ("truncated", [], "truncated"),
    ("ok", ["--data", DATA + ",seed=3"], "another dataset"),
    ("ok", ["--data", "/nonexistent/data"], "dataset not found"),
])
def test_bad_input_is_one_line_exit_2(cli, sets, tmp_path, how, args, message):
    d = tmp_path / "r"
    if how != "missing_dir":
        shutil.copytree(sets["int8"], d)
        _break(d, how)
    for extra in ([], ["--json"]):
        code, out, err = cli("records", "stats", d, *args, *extra)
        assert code == 2 and out == "" and message in err, err
        assert err.startswith("pointkd: error: ") and err.count("\n") == 1
