"""Mixed views (`augment.mix` = "points" | "ball"): a share of a cloud's points replaced by
another training shape's, recorded once (partner + share in the row) and replayed exactly;
the no-KD baseline trains on the same views with the mixed label."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointkd import augment
from pointkd.config.run import load_config
from pointkd.config.stages import RecordConfig
from pointkd.config.types import AugmentSpec
from pointkd.errors import ConfigError
from pointkd.records import open_records, read_manifest
from pointkd.records.format import row_dtype
from pointkd.stages import record, train
from pointkd.teachers.load import load_teachers
from pointkd.training.losses import UNLABELLED, classification_loss
from pointkd.training.sources import SINGLE, RecordReplay, training_source

DATA = "synthetic:version=1,train_per_class=10,test_per_class=3"
TINY = [f"data.path={DATA}", "data.num_points=96", "train.epochs=1",
        "train.max_steps_per_epoch=3", "train.batch_size=16", "train.progress=false",
        "train.device=cpu", "train.threads=1"]
KINDS = ("points", "ball")


def _clouds(b: int = 5, p: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, p, 3, generator=g), torch.randn(b, p, 3, generator=g) + 10.0


@pytest.mark.parametrize("kind", KINDS)
def test_mix_replaces_exactly_the_share_and_is_a_pure_function(kind):
    spec = AugmentSpec(mix=kind, mix_prob=1.0, mix_max=0.8)
    a, b = _clouds()
    keys = augment.sample_keys(5, torch.Generator().manual_seed(1))
    partners, lams = augment.keyed_mix(keys, spec, torch.arange(5), 5)
    seeds = augment.keyed_params(keys, spec)[1]
    out = augment.mix(a, b, lams, seeds, spec)
    from_b = out[..., 0] > 5  # b's points sit near x = 10, a's near 0
    assert torch.equal(from_b.sum(1), augment.mixed_count(lams, 64))
    kept = ~from_b
    assert torch.equal(out[kept], a[kept])  # a's other points stay where they were
    for i in range(5):  # the partner's points are b's own, each used once
        got = {tuple(v) for v in out[i][from_b[i]].tolist()}
        assert got <= {tuple(v) for v in b[i].tolist()} and len(got) == int(from_b[i].sum())
    one_by_one = torch.cat([augment.mix(a[i:i + 1], b[i:i + 1], lams[i:i + 1],
                                        seeds[i:i + 1], spec) for i in range(5)])
    assert torch.equal(out, one_by_one)
    assert torch.equal(augment.mix(a, b, torch.zeros(5), seeds, spec), a)


def test_ball_replaces_the_points_nearest_one_point_of_the_cloud():
    spec = AugmentSpec(mix="ball", mix_prob=1.0)
    a, b = _clouds(b=3, p=128)
    lams, seeds = torch.full((3,), 0.25), torch.tensor([3, 4, 5])
    out = augment.mix(a, b, lams, seeds, spec)
    for i in range(3):
        replaced = out[i, :, 0] > 5
        # the replaced points of `a` are the 32 nearest some point c of `a`: every kept point
        # is at least as far from c as every replaced one, for the c that `mix` chose
        d = torch.cdist(a[i], a[i])
        ok = [(d[c][~replaced].min() >= d[c][replaced].max()) for c in range(128)]
        assert any(ok) and int(replaced.sum()) == 32


def test_keyed_mix_partners_and_shares():
    spec = AugmentSpec(mix="points", mix_prob=0.5, mix_max=0.4)
    keys = augment.row_keys(7, torch.arange(4000) % 100, torch.arange(4000) // 100)
    selves = torch.arange(4000) % 100
    partners, lams = augment.keyed_mix(keys, spec, selves, 100)
    mixed = partners >= 0
    assert 0.45 < mixed.float().mean() < 0.55
    assert bool((partners[mixed] != selves[mixed]).all()) and int(partners.max()) < 100
    assert set(partners[mixed].tolist()) == set(range(100))  # any other shape
    assert bool((lams[~mixed] == 0).all()) and 0 < float(lams[mixed].min())
    assert float(lams.max()) <= 0.4 and torch.equal(lams, lams.half().float())
    none = augment.keyed_mix(keys, AugmentSpec(), selves, 100)
    assert bool((none[0] == -1).all()) and bool((none[1] == 0).all())


def test_a_spec_without_mixing_writes_the_manifest_it_always_wrote():
    assert "mix" not in AugmentSpec().to_dict()
    mixed = AugmentSpec(mix="ball", mix_prob=0.3).to_dict()
    assert mixed["mix"] == "ball" and AugmentSpec.from_dict(mixed) == AugmentSpec(
        mix="ball", mix_prob=0.3)
    plain, with_mix = row_dtype(10, "int8"), row_dtype(10, "int8", mixed=True)
    assert with_mix.itemsize == plain.itemsize + 6  # int32 partner + float16 share


@pytest.mark.parametrize(("key", "value"), [("mix", "cutmix"), ("mix_prob", 0),
                                            ("mix_prob", 1.5), ("mix_max", 0),
                                            ("mix_max", 2)])
def test_bad_mix_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        load_config(None, [f"augment.{key}={value}"])


def test_mixed_ce_is_the_share_weighted_ce():
    g = torch.Generator().manual_seed(0)
    z, y, yb = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0]), \
        torch.tensor([1, 2, 3, 4, 0, 1])
    w = torch.tensor([0.0, 0.25, 0.5, 0.1, 0.0, 0.3])
    want = ((1 - w) * F.cross_entropy(z, y, reduction="none")
            + w * F.cross_entropy(z, yb, reduction="none")).mean()
    assert torch.allclose(classification_loss(z, y, mixed=(yb, w)), want)
    assert torch.allclose(classification_loss(z, y, mixed=(yb, torch.zeros(6))),
                          classification_loss(z, y))
    # a cloud with an unlabelled partner leaves CE (unless nothing of it was replaced)
    yb2 = yb.clone()
    yb2[1] = UNLABELLED
    keep = torch.tensor([0, 2, 3, 4, 5])
    want2 = ((1 - w[keep]) * F.cross_entropy(z[keep], y[keep], reduction="none")
             + w[keep] * F.cross_entropy(z[keep], yb[keep], reduction="none")).mean()
    assert torch.allclose(classification_loss(z, y, mixed=(yb2, w)), want2)


@pytest.fixture(scope="module")
def mixed_records(tmp_path_factory):
    """A tiny teacher and a K 3 fp32 record set of mixed views ("ball")."""
    root = tmp_path_factory.mktemp("mix")
    train.run(load_config(None, [*TINY, "model.name=student_xs", f"out={root / 't'}"]))
    (root / "mix.yaml").write_text("augment: {mix: ball, mix_prob: 0.7}\n")
    out = record.run(RecordConfig(
        teachers=[str(root / "t" / "best.pt")], data=DATA, out=str(root / "rec"), k=3,
        logits="fp32", device="cpu", progress=False,
        augment=AugmentSpec(mix="ball", mix_prob=0.7)))
    return root, out


def test_recorded_mixed_rows_replay_the_teachers_cloud_exactly(mixed_records):
    root, out = mixed_records
    m = read_manifest(out.root)
    assert m["augment"]["mix"] == "ball" and out.bytes_per_row == row_dtype(
        m["data"]["num_classes"], "fp32", mixed=True).itemsize
    rs = open_records(out.root)
    rows = rs.rows(np.arange(len(rs)))
    mixed = rows.mix_shapes >= 0
    assert 0.5 < float(mixed.float().mean()) < 0.9
    assert bool((rows.mix_shapes[mixed] != torch.as_tensor(rows.sample)[mixed]).all())
    # the teacher on the replayed cloud gives the stored logits (fp32 records)
    from pointkd.data import load_split

    ds = load_split(DATA, "train", num_points=m["data"]["num_points"])
    points = torch.from_numpy(ds.points)
    idx = torch.arange(24)
    clouds = augment.mix(points[rows.sample[:24]], points[rows.mix_shapes[:24].clamp(min=0)],
                         rows.mix_lams[:24], rows.seeds[:24], rs.spec)
    x = augment.apply(clouds, rows.params[:24], rows.seeds[:24], rs.spec)
    (teacher,) = load_teachers([str(root / "t" / "best.pt")], "cpu")
    with torch.inference_mode():
        z = teacher(x, idx)
    assert torch.allclose(z, rows.logits[:24], atol=1e-5, rtol=1e-5)


def test_replay_never_uses_a_row_mixed_with_a_validation_shape(mixed_records):
    root, out = mixed_records
    cfg = load_config(None, [*TINY[1:], "model.name=student_xs", f"out={root / 's'}",
                             f"distill.records={out.root}", "data.val_fraction=0.3"])
    train.check(cfg)
    for per_epoch in ("one_per_shape", "all"):
        cfg.distill.rows_per_epoch = per_epoch
        data, val_idx, source, _ = training_source(cfg, SINGLE, torch.device("cpu"))
        assert isinstance(source, RecordReplay)
        val = set(val_idx.tolist())
        seen_shapes = []
        for batch in source.batches(0, 1000):
            partners = batch.mix_shapes[batch.mix_shapes >= 0].tolist()
            assert not val & set(partners) and not val & set(batch.shapes.tolist())
            seen_shapes += batch.shapes.tolist()
        if per_epoch == "one_per_shape":  # every training shape with a usable row, once
            assert len(seen_shapes) == len(set(seen_shapes)) == len(source)
        else:
            assert len(seen_shapes) == len(source) == int(source.usable.sum())
        assert int(source.usable.sum()) < source.usable.size  # some rows were left out


def test_distill_from_mixed_records_and_the_mixed_baseline_from_the_cli(mixed_records, cli):
    root, out = mixed_records
    code, text, err = cli("distill", "--records", str(out.root), "--student", "student_xs",
                          "--out", str(root / "kd"), *TINY[1:])
    assert code == 0, err
    history = json.loads((root / "kd" / "metrics.json").read_text())
    assert all(np.isfinite(h["train_ce"]) and h["train_kd"] > 0 for h in history)
    # the no-KD baseline on the same views: plain training with the same augment section
    code, text, err = cli("train", "--model", "student_xs", "--out", str(root / "plain"),
                          "--config", str(root / "mix.yaml"), *TINY)
    assert code == 0, err
    saved = (root / "plain" / "config.yaml").read_text()
    assert "mix: ball" in saved


def test_records_stats_report_the_mixed_views(mixed_records):
    from pointkd.records.stats import record_stats

    _, out = mixed_records
    stats = record_stats(out.root)
    rs = open_records(out.root)
    rows = rs.rows(np.arange(len(rs)))
    mixed = rows.mix_shapes >= 0
    assert stats.mixed_fraction == pytest.approx(float(mixed.float().mean()))
    assert stats.mixed_mean_share == pytest.approx(float(rows.mix_lams[mixed].mean()), 1e-5)
    assert 0 < stats.mixed_own_class_prob < 1 and 0 < stats.mixed_partner_class_prob < 1
    assert "mixed " in stats.text() and "mixed_fraction" in stats.to_dict()
