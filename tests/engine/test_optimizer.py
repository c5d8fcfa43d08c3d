"""The trainer's optimizers: the fused implementation where torch has one, the same steps as torch's default
one, and resuming keeps the implementation the optimizer was built with."""
from __future__ import annotations

import pytest
import torch

from yolo_attn.engine.trainer import _TORCH_VERSION, _fastest, build_optimizer, load_optimizer_state
from yolo_attn.models import build_model

CPU_FUSED = _TORCH_VERSION >= (2, 4)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(1, 3)


def _set_grads(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p.device)


def _as_built_before(model, cls, **options):
    """``cls`` on the trainer's parameter groups, as an earlier version built it: no fused flag."""
    groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay", "name")}
              for g in build_optimizer(model, "sgd", 0.01, 0.9, 0.05).param_groups]
    return cls(groups, **options)


@pytest.mark.skipif(not CPU_FUSED, reason="CPU fused optimizers came with torch 2.4")
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_fused_optimizer_steps_as_torchs_default(name):
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(fused_model, name, lr=0.01, momentum=0.9, weight_decay=0.05)
    assert all(g["fused"] for g in fused.param_groups)
    plain = build_optimizer(plain_model, name, lr=0.01, momentum=0.9, weight_decay=0.05)
    for group in plain.param_groups:  # torch's CPU default: a loop over the tensors
        group["fused"], group["foreach"] = False, False
    for step in range(3):
        _set_grads(fused_model, step)
        _set_grads(plain_model, step)
        fused.step()
        plain.step()
    moved = 0.0
    for a, b, start in zip(fused_model.parameters(), plain_model.parameters(), _model().parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        moved = max(moved, (a - start).abs().max().item())
    assert moved > 1e-3  # the steps did change the weights


def test_without_a_fused_kernel_it_falls_back_to_foreach():
    class NoFused(torch.optim.SGD):
        def __init__(self, params, fused=None, **options):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices")
            super().__init__(params, **options)

    optimizer = _fastest(NoFused, [{"params": list(_model().parameters())}], lr=0.1, momentum=0.9)
    assert optimizer.param_groups[0]["foreach"] is True and not optimizer.param_groups[0]["fused"]


def test_resuming_keeps_the_implementation_and_loads_the_state():
    model = _model()
    old = _as_built_before(model, torch.optim.SGD, lr=0.01, momentum=0.9, nesterov=True)
    _set_grads(model)
    old.step()
    saved = old.state_dict()
    assert all(not g.get("fused") for g in saved["param_groups"])

    resumed_model = _model()
    optimizer = build_optimizer(resumed_model, "sgd", 0.01, 0.9, 0.05)
    built = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    load_optimizer_state(optimizer, saved)
    assert [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups] == built
    first = next(iter(resumed_model.parameters()))
    torch.testing.assert_close(optimizer.state[first]["momentum_buffer"],
                               old.state[next(iter(model.parameters()))]["momentum_buffer"])
    assert optimizer.param_groups[0]["weight_decay"] == saved["param_groups"][0]["weight_decay"]


def test_torch_before_2_4_gets_foreach_on_a_cpu(monkeypatch):
    """torch 2.3's fused SGD takes CPU tensors and fails only at the first step: not even tried there."""
    monkeypatch.setattr("yolo_attn.engine.trainer._TORCH_VERSION", (2, 3))
    optimizer = build_optimizer(_model(), "sgd", 0.01, 0.9, 0.05)
    assert all(g["foreach"] is True and not g["fused"] for g in optimizer.param_groups)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_adamw_resumed_from_an_unfused_run_steps(device):
    """AdamW keeps a ``step`` per parameter, which torch places by the groups' flags while loading: the fused
    kernel on CUDA needs it on the device."""
    model = _model().to(device)
    old = _as_built_before(model, torch.optim.AdamW, lr=0.01, foreach=True)
    _set_grads(model)
    old.step()

    resumed = _model().to(device)
    optimizer = build_optimizer(resumed, "adamw", 0.01, 0.9, 0.05)
    load_optimizer_state(optimizer, old.state_dict())
    fused = optimizer.param_groups[0]["fused"]
    assert fused == CPU_FUSED or device == "cuda"
    for p in resumed.parameters():
        assert optimizer.state[p]["step"].item() == 1
        assert optimizer.state[p]["step"].device.type == (device if fused else "cpu")
    _set_grads(resumed, 2)
    optimizer.step()
    assert all(optimizer.state[p]["step"].item() == 2 for p in resumed.parameters())
