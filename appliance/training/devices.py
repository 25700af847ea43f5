"""Which device a run uses, and the mixed precision it may use there.

``training.device`` asks; what is present decides. A CUDA request on a host without a usable
CUDA device falls back to the CPU with a warning (the card records the device that ran), so
a job queued for a GPU host still finishes on a CPU one.

Mixed precision and clipping. Under bf16 autocast Opacus 1.6 computes per-sample gradients in
bf16 (``grad_sample/linear.py`` casts the activations to the backprops' dtype) and then their
norms and clip factors in bf16 too (``DPOptimizer.clip_and_accumulate`` casts to the
parameters' dtype only *after* the clip factor is computed). A bf16 norm is off by up to
about 0.4%, so a "clipped" example could contribute a gradient of norm above
``max_grad_norm``, and the noise would no longer cover it. Hence:

- ``hooks``: the forward may run under bf16 autocast, and :func:`grad_samples_to_fp32` casts
  every per-sample gradient to fp32 after the backward pass, before Opacus clips. Norms, clip
  factors and the clipped sum are then fp32 (each example's gradient is the bf16 one it
  computed, clipped exactly);
- ``ghost``: never under autocast. Ghost clipping computes the norms from bf16 activations and
  backprops and then the clipped sum in a second, reweighted bf16 backward pass; the two do
  not agree to fp32 precision, and no cast afterwards can bound each example's contribution.
  A ghost run is fp32 throughout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch

log = logging.getLogger(__name__)


def resolve_device(requested: str, *, local_rank: int = 0) -> torch.device:
    """``auto``/``cuda`` -> the first (or the rank's) CUDA device when available, else CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested != "auto":
            log.warning("training asked for %s but no CUDA device is available; training on the CPU", requested)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = local_rank if requested in ("auto", "cuda") else int(requested.partition(":")[2]) + local_rank
    if index >= count:
        log.warning("training asked for cuda:%d but the host has %d CUDA devices; training on the CPU", index, count)
        return torch.device("cpu")
    return torch.device("cuda", index)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast pays on ``device``: CUDA devices that support it (CPU bf16 is
    slower than fp32 on most server CPUs)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast_dtype(mode: str, wanted: bool, *, supported: bool) -> torch.dtype | None:
    """The dtype a run's forward pass autocasts to, or None for fp32: bf16 when the task wants
    it (``TaskRun.autocast``), the device supports it (:func:`bf16_supported`) and the DP mode
    can still clip exactly (not ``ghost``; see the module doc)."""
    if not (wanted and supported) or mode == "ghost":
        return None
    return torch.bfloat16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device`` (from :func:`autocast_dtype`); None: nothing."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_samples_to_fp32(params: Iterable[torch.Tensor]) -> None:
    """Cast the per-sample gradients Opacus's hooks left on ``params`` to fp32, so that the
    optimizer computes norms and clip factors in fp32 (call after the backward pass, before
    ``optimizer.step()``). A no-op for fp32 gradients."""
    for p in params:
        sample: torch.Tensor | list[torch.Tensor] | None = getattr(p, "grad_sample", None)
        if isinstance(sample, list):
            p.grad_sample = [g.float() if g.dtype != torch.float32 else g for g in sample]  # type: ignore[attr-defined]
        elif sample is not None and sample.dtype != torch.float32:
            p.grad_sample = sample.float()  # type: ignore[attr-defined]


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's own figure, or the host's ``MemAvailable``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30
