"""One run over several GPUs of a host: Opacus ``DPDDP`` in processes started by PyTorch's
elastic launcher (the machinery behind ``torchrun``, called as a library).

Each process (rank) holds a replica of the trainable module. Poisson sampling is done per
rank on its shard of the rows (Opacus's ``DistributedUniformWithReplacementSampler``), so
the global batch is still a Poisson sample at the run's sample rate; the clipped gradients
are summed across ranks and rank 0 alone adds the noise. The privacy accounting is the
same as one process with the same batch size: the card's epsilon does not depend on ``gpus``.

The examples and the run's secret (see :mod:`appliance.training.engine`: it seeds the noise
and the Poisson sampling) travel to the ranks as the entry point's arguments, pickled
through the pipes of the launcher's ``spawn`` start method: never through a file, the
environment or a command line (so not in ``ps`` output or ``/proc/*/environ``), and the
launcher logs its configuration, not the arguments. Every rank derives its own sampling
stream from (secret, epoch, rank); the shard shuffle of Opacus's distributed sampler is
seeded by the epoch alone, which is harmless: which rank holds a row changes nothing in the
noisy sum. Progress, checkpoints and the result come back over a multiprocessing queue, so the
caller's callbacks run in the caller's process as for a single-process run. Ranks use
NCCL on CUDA and gloo on CPU (how the tests run two ranks without a GPU).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.training.spec import (
    CheckpointSink,
    Example,
    Progress,
    TrainingCancelled,
    TrainingResult,
    TrainingSpec,
)

_POLL_S = 0.2


def train_distributed(
    spec: TrainingSpec,
    examples: Sequence[Example],
    output_dir: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointSink | None = None,
    resume: bytes | None = None,
    secret: int,
) -> TrainingResult:
    """:func:`appliance.training.engine.train` for ``spec.gpus`` processes (see the module doc);
    ``secret`` is the run's (every rank gets it; a resumed run takes the checkpoint's)."""
    import multiprocessing

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    stop: Any = ctx.Event()
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=spec.gpus,
        run_id=f"appliance-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        max_restarts=0,
        start_method="spawn",
        monitor_interval=0.2,
    )
    outcome: dict[str, Any] = {}

    def launch() -> None:
        try:
            outcome["ranks"] = elastic_launch(config, _rank_main)(
                spec, list(examples), output_dir, resume, secret, events, stop
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=launch, name="appliance-ddp-launch", daemon=True)
    thread.start()
    result: TrainingResult | None = None
    cancelled: TrainingCancelled | None = None
    while thread.is_alive() or not events.empty():
        if should_stop is not None and should_stop():
            stop.set()
        try:
            kind, payload = events.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if kind == "progress" and on_progress is not None:
            on_progress(payload)
        elif kind == "checkpoint" and checkpoints is not None:
            checkpoints.save(*payload)
        elif kind == "result":
            result = payload
        elif kind == "cancelled":
            cancelled = TrainingCancelled(**payload)
        elif kind == "error":
            outcome["rank_error"] = payload  # the rank's own error says more than the launcher's
    thread.join()
    if cancelled is not None:
        raise cancelled
    if isinstance(outcome.get("rank_error"), ApplianceError):
        raise outcome["rank_error"]
    if "error" in outcome or result is None:
        raise RuntimeError(f"distributed training failed: {outcome.get('error')}")
    return result


class _QueueSink:
    def __init__(self, events: Any) -> None:
        self._events = events

    def save(self, step: int, state: bytes) -> None:
        self._events.put(("checkpoint", (step, state)))


def _rank_main(
    spec: TrainingSpec,
    examples: list[Example],
    output_dir: Path,
    resume: bytes | None,
    secret: int,
    events: Any,
    stop: Any,
) -> None:
    """One rank, started by the elastic launcher (``RANK``, ``WORLD_SIZE``, ``MASTER_*`` set)."""
    import torch
    import torch.distributed as dist

    from appliance.training.engine import Run

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if spec.device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group(backend=backend)
    try:
        run = Run(spec, examples, rank=rank, world=world, secret=secret)

        def should_stop() -> bool:
            # Every rank must stop at the same step, or the others wait in all-reduce forever.
            flag = torch.tensor([1.0 if stop.is_set() else 0.0], device=run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item() > 0)

        def progress(p: Progress) -> None:
            events.put(("progress", p))

        result = run.execute(
            output_dir,
            on_progress=progress if rank == 0 else None,
            should_stop=should_stop,
            checkpoints=_QueueSink(events) if rank == 0 else None,
            resume=resume,
        )
        if rank == 0:
            events.put(("result", result))
    except TrainingCancelled as cancelled:
        if rank == 0:
            events.put(
                ("cancelled", {"steps": cancelled.steps, "epsilon_spent": cancelled.epsilon_spent,
                               "history": cancelled.history})
            )  # fmt: skip
    except ApplianceError as exc:
        if rank == 0:
            events.put(("error", exc))
        raise
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
