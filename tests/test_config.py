"""Typed config: YAML presets, dotted overrides, unknown keys, resolved config saved (field
rules: test_config_declarations.py)."""

from pathlib import Path

import pytest
import yaml

from pointkd.config.merge import save_config, to_dict
from pointkd.config.run import RunConfig, from_dict, load_config
from pointkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=5", "optim.lr=0.002", "model.kwargs={width: 32}",
                             "augment.rotate=true", "out=runs/x"])
    assert cfg.train.epochs == 5 and cfg.optim.lr == 0.002
    assert cfg.model.kwargs == {"width": 32} and cfg.augment.rotate is True
    assert cfg.out == "runs/x"


def test_int_is_accepted_for_float():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


# Every field's range, choices, type and finiteness, and every cross-field CHECK, are tested
# from their declarations in test_config_declarations.py; here: keys that are no field.
@pytest.mark.parametrize("override, key", [
    ("train.epoch=5", "train.epoch"),
    ("nosuch.key=1", "nosuch"),
])
def test_unknown_keys_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  batch_size: 8\noptim:\n  name: sgd\n")
    cfg = load_config(p, ["train.epochs=3"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.name) == (3, 8, "sgd")


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(typo)


def test_resolved_config_roundtrip(tmp_path):
    cfg = load_config(None, ["train.seed=3", "distill.beta=-0.1"])
    save_config(cfg, tmp_path / "config.yaml")
    again = from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")))
def test_presets_load(preset):
    assert isinstance(load_config(preset), RunConfig)


def test_cli_reports_config_errors(cli):
    code, out, err = cli("train", "--model", "pointnet", "--data", "synthetic", "train.epoch=1")
    assert code == 2 and "train.epoch" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
