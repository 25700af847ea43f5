"""Which device a run uses, and the mixed precision it may use there.

``training.device`` asks; what is present decides. A CUDA request on a host without a usable
CUDA device falls back to the CPU with a warning (the card records the device that ran), so
a job queued for a GPU host still finishes on a CPU one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA devices that support it; nothing elsewhere (CPU bf16 is slower
    than fp32 on most server CPUs, and the per-sample gradient arithmetic stays fp32 in
    Opacus either way: it casts per-sample gradients to the parameters' dtype before clipping)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


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
