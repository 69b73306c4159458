"""`pointkd export --onnx` never writes through a link: one at the output name or at its
temp name is refused with one line and its target is left untouched."""

from __future__ import annotations

import pytest
from test_export import make_ckpt


@pytest.mark.parametrize("where", ["output", "temp"])
def test_a_link_at_the_onnx_path_is_refused(cli, tmp_path, where):
    ckpt = make_ckpt(tmp_path / "m.pt", num_points=64)
    target = tmp_path / "precious.txt"
    target.write_text("a user's file")
    out = tmp_path / "m.onnx"
    (out if where == "output" else tmp_path / ".m.onnx.partial").symlink_to(target)
    code, _, err = cli("export", ckpt, "--onnx", out, "--overwrite")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and target.read_text() == "a user's file"
    assert out.is_symlink() or not out.exists()
