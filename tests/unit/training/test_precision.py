"""Clipping stays exact under mixed precision.

Under bf16 autocast Opacus 1.6 computes per-sample gradients, their norms and the clip
factors in bf16, so a clipped example's gradient can come out up to ~0.6% above
``max_grad_norm`` (found on CPU autocast here; CUDA bf16 rounds the same way). The engine
casts per-sample gradients to fp32 before clipping (hooks) and keeps ghost clipping out of
autocast; these tests run the engine's choices on CPU bf16 autocast, one example per batch,
so the clipped sum *is* that example's clipped gradient.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import PrivacyEngine
from torch import nn

from appliance.training.devices import autocast, autocast_dtype, grad_samples_to_fp32

MAX_GRAD_NORM = 1.0
EXAMPLES = 48


def _clipped_norms(mode: str) -> list[float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 96), nn.Tanh(), nn.Linear(96, 96), nn.Tanh(), nn.Linear(96, 5))
    with torch.no_grad():  # large weights: every example's gradient is far above the norm, so every one is clipped
        for p in model.parameters():
            p.mul_(3)
    rows = torch.utils.data.TensorDataset(torch.randn(EXAMPLES, 48), torch.randint(0, 5, (EXAMPLES,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure RNG off, no noise: this test looks at clipping alone
        private = PrivacyEngine(accountant="rdp").make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=torch.utils.data.DataLoader(rows, batch_size=1),
            criterion=nn.CrossEntropyLoss(),
            noise_multiplier=0.0,
            max_grad_norm=MAX_GRAD_NORM,
            poisson_sampling=False,
            grad_sample_mode=mode,
        )
    if mode == "ghost":
        module, optimizer, criterion, loader = private
    else:
        (module, optimizer, loader), criterion = private, nn.CrossEntropyLoss()
    dtype = autocast_dtype(mode, True, supported=True)  # as on a GPU with bf16, for a task that wants it
    norms = []
    for x, y in loader:
        with autocast(torch.device("cpu"), dtype):
            logits = module(x)
        with warnings.catch_warnings():  # Opacus's hooks on the first layer, whose input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            criterion(logits.float(), y).backward()  # ghost: both passes, p.grad is the clipped sum
        if mode == "hooks":
            grad_samples_to_fp32(optimizer.params)  # what the engine does before optimizer.step()
            optimizer.clip_and_accumulate()
            clipped = [p.summed_grad for p in optimizer.params]
        else:
            clipped = [p.grad for p in optimizer.params]
        norms.append(float(torch.cat([g.reshape(-1) for g in clipped]).norm()))
        optimizer.zero_grad()
    return norms


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_under_bf16_autocast_every_clipped_per_sample_gradient_is_within_the_clipping_norm(mode: str) -> None:
    norms = _clipped_norms(mode)
    assert min(norms) > 0.99 * MAX_GRAD_NORM  # every example was clipped (the test means something)
    assert max(norms) <= MAX_GRAD_NORM + 1e-6


def test_hooks_may_autocast_but_ghost_clipping_and_unsupported_devices_stay_fp32() -> None:
    assert autocast_dtype("hooks", True, supported=True) == torch.bfloat16
    assert autocast_dtype("off", True, supported=True) == torch.bfloat16
    assert autocast_dtype("ghost", True, supported=True) is None
    assert autocast_dtype("hooks", True, supported=False) is None
    assert autocast_dtype("hooks", False, supported=True) is None


def test_fp32_per_sample_gradients_are_left_alone_and_bf16_ones_are_cast() -> None:
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    fp32 = torch.ones(3, 2)
    p.grad_sample = fp32  # type: ignore[attr-defined]
    q.grad_sample = [torch.ones(3, 2, dtype=torch.bfloat16)]  # type: ignore[attr-defined]
    grad_samples_to_fp32([p, q])
    assert p.grad_sample is fp32  # type: ignore[attr-defined]
    assert q.grad_sample[0].dtype == torch.float32  # type: ignore[attr-defined]
