"""The compact student family: sizes, forward/backward, small inputs, determinism."""

from __future__ import annotations

import pytest
import torch

from pointkd.models import count_parameters, create_model, list_models

NOMINAL = {"student_xs": 0.1e6, "student_s": 0.3e6, "student_m": 0.5e6, "student_l": 1.0e6}


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_student_size_within_15_percent(name):
    n = count_parameters(create_model(name, 40))
    assert abs(n - NOMINAL[name]) / NOMINAL[name] < 0.15, n


def test_student_s_fits_the_cpu_protocol_budget():
    # the benchmark protocol's students must have at most 0.3M parameters at 40 classes
    assert count_parameters(create_model("student_s", 40)) <= 300_000


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_student_trains_and_is_deterministic_in_eval(name):
    torch.manual_seed(0)
    model = create_model(name, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.rand(8, 128, 3) * 2 - 1, torch.arange(8) % 10
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 1024, 3))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        assert torch.equal(model(x[:2]), model(x[:2]))
        assert model(torch.rand(1, 20, 3)).shape == (1, 10)  # fewer points than anchors/k


def test_fps_sampler_option_and_bad_arguments():
    model = create_model("student_xs", 5, sampler="fps").eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 300, 3)).shape == (2, 5)
    from pointkd.errors import ModelError

    with pytest.raises(ModelError):
        create_model("student_xs", 5, sampler="magic")
    assert set(NOMINAL) <= set(list_models())
