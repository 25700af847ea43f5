"""The worker loop: claim a queued job, keep the claim alive, train, hand back the outcome.

Storage-free on purpose: the loop talks to a :class:`JobStore` (the database-backed one is
``appliance.services.finetune_queue.DbJobStore``) and to a ``train`` function with the
engine's signature (:func:`appliance.training.engine.train`), both handed in.

What the loop guarantees:

- **A claim is a lease.** A heartbeat thread renews it every third of ``lease_s``; a worker
  that dies (SIGKILL, power loss) stops renewing, and once the lease ran out another
  worker (or this one restarted) takes the job over and resumes it from its last sealed
  checkpoint. A worker that finds its lease lost (another took over) stops training and
  touches the job no more.
- **Only a finished run is registered.** ``store.complete`` gets the result after ``train``
  returned; a cancel, a failure or a crash registers nothing.
- **No step runs uncharged.** Before each step the loop has the store raise the job's
  privacy charge to that step (``store.charge``); a crash, a failure or a SIGKILL mid-step
  leaves every step that ran charged. A charge that cannot be written stops the run. (Under
  ``DPDDP`` the ranks do not wait for the parent's poll, so there the charge follows each
  reported step at once instead of preceding it.)
- **Stopping is orderly.** :meth:`Worker.stop` (SIGTERM) stops the running job at its next
  step and hands it back to the queue with its checkpoint, to be resumed later.
- **Plaintext model files live only in the scratch directory**, a private directory (in
  memory by default, ``/dev/shm``) that is removed as soon as the store sealed them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliance.errors import ApplianceError
from appliance.training.spec import (
    CheckpointSink,
    Example,
    Progress,
    TrainingCancelled,
    TrainingResult,
    TrainingSpec,
)

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "appliance-train-"
STOP_POLL_S = 1.0
"""How often (at most) ``should_stop`` asks the store whether the job was cancelled."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    attempt: int
    worker_id: str


@dataclass(frozen=True)
class PreparedJob:
    """What ``train`` needs, valid while the store's ``prepare`` block is open (a sealed
    base model's files are in memory only that long)."""

    spec: TrainingSpec
    examples: Sequence[Example]
    resume: bytes | None


class JobStore(Protocol):
    """The worker's view of the job queue. Every method but ``claim`` acts only while this
    worker still holds the job's lease; ``renew`` says whether it does."""

    def claim(self, worker_id: str) -> ClaimedJob | None:
        """The next job to run (queued, or running with a lost lease), now leased to
        ``worker_id``; None when there is none or another worker has the queue."""
        ...

    def renew(self, job: ClaimedJob) -> bool: ...

    def cancel_requested(self, job: ClaimedJob) -> bool: ...

    def prepare(self, job: ClaimedJob) -> AbstractContextManager[PreparedJob]: ...

    def charge(self, job: ClaimedJob, step: int, epsilon: float) -> bool:
        """Charge the job for ``step`` steps before step ``step`` runs (``epsilon``: the
        engine's last figure); False when the job is no longer this worker's."""
        ...

    def progress(self, job: ClaimedJob, progress: Progress) -> None:
        """Step, loss, epsilon, ETA for display (may be written less often than called)."""
        ...

    def checkpoint(self, job: ClaimedJob, step: int, state: bytes) -> None: ...

    def complete(self, job: ClaimedJob, result: TrainingResult) -> None: ...

    def cancelled(self, job: ClaimedJob, exc: TrainingCancelled) -> None: ...

    def failed(self, job: ClaimedJob, reason: str) -> None: ...

    def release(self, job: ClaimedJob) -> None:
        """Hand the job back to the queue (the worker is stopping); its checkpoint stays."""
        ...

    def idle(self, worker_id: str) -> None:
        """Called between polls: keep whatever the worker holds while it waits."""
        ...

    def leave(self, worker_id: str) -> None:
        """The worker exits: give up what it holds, so another need not wait for expiry."""
        ...


class Train(Protocol):
    def __call__(
        self,
        spec: TrainingSpec,
        examples: Sequence[Example],
        output_dir: Path,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoints: CheckpointSink | None = None,
        resume: bytes | None = None,
    ) -> TrainingResult: ...


class _LeaseLost(Exception):
    pass


class _Sink:
    def __init__(self, store: JobStore, job: ClaimedJob) -> None:
        self._store = store
        self._job = job

    def save(self, step: int, state: bytes) -> None:
        self._store.checkpoint(self._job, step, state)


class _Heartbeat:
    """Renews the job's lease every ``every_s`` seconds on its own thread, so a long step
    never lets the lease run out; ``lost`` turns true when a renewal is refused."""

    def __init__(self, store: JobStore, job: ClaimedJob, every_s: float) -> None:
        self._store = store
        self._job = job
        self._every = every_s
        self._done = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._every):
            try:
                if not self._store.renew(self._job):
                    self.lost = True
                    log.warning("lost the lease on a job", extra={"job_id": self._job.id})
                    return
            except Exception:
                log.warning("could not renew a job lease", extra={"job_id": self._job.id}, exc_info=True)


def default_scratch() -> Path:
    """``/dev/shm`` (memory) when it exists and is writable, else the system temp directory."""
    shm = Path("/dev/shm")  # noqa: S108 - a memory file system, used through a private mkdtemp directory
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def remove_stale_scratch(scratch: Path) -> int:
    """Remove scratch directories left by worker processes that no longer run."""
    removed = 0
    for entry in scratch.glob(f"{SCRATCH_PREFIX}*"):
        pid = entry.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)) or not entry.is_dir() or entry.is_symlink():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker:
    def __init__(
        self,
        store: JobStore,
        train: Train,
        *,
        lease_s: float,
        poll_s: float,
        scratch: Path | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self._train = train
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._scratch = scratch or default_scratch()
        self.worker_id = worker_id or new_worker_id()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Finish at the next step of the running job (handing it back), then exit."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, once: bool = False, on_job: Callable[[str, str], None] | None = None) -> int:
        """Claim and run jobs until :meth:`stop` (or, with ``once``, until the queue is
        empty). ``on_job(job_id, outcome)`` is told of each job. Returns the jobs run."""
        remove_stale_scratch(self._scratch)
        ran = 0
        try:
            while not self.stopping:
                job = self.store.claim(self.worker_id)
                if job is None:
                    if once:
                        break
                    self.store.idle(self.worker_id)
                    self._stopping.wait(self._poll_s)
                    continue
                outcome = self.run_job(job)
                ran += 1
                if on_job is not None:
                    on_job(job.id, outcome)
        finally:
            self.store.leave(self.worker_id)
        return ran

    def run_job(self, job: ClaimedJob) -> str:
        """Run one claimed job to its end; returns ``succeeded``, ``cancelled``, ``failed``,
        ``released`` (the worker is stopping) or ``lost`` (another worker took it over)."""
        log.info("job started", extra={"job_id": job.id, "attempt": job.attempt, "worker": self.worker_id})
        with _Heartbeat(self.store, job, max(0.5, self._lease_s / 3)) as beat:
            outcome = self._run(job, beat)
        log.info("job ended", extra={"job_id": job.id, "outcome": outcome})
        return outcome

    def _run(self, job: ClaimedJob, beat: _Heartbeat) -> str:
        checked = [0.0, False]
        last: list[Progress] = []
        refused = [False]
        charged = [0]

        def should_stop() -> bool:
            """Polled before every step: stop, or charge the step that is about to run."""
            if beat.lost or self.stopping:
                return True
            now = time.monotonic()
            if now - checked[0] >= STOP_POLL_S:
                checked[0] = now
                with contextlib.suppress(Exception):  # a hiccup: ask again next step
                    checked[1] = self.store.cancel_requested(job)
            if checked[1]:
                return True
            done, epsilon = (last[0].step, last[0].epsilon_spent) if last else (0, 0.0)
            if done + 1 > charged[0]:  # once per step (DPDDP polls more often than it steps)
                if not self.store.charge(job, done + 1, epsilon):
                    refused[0] = True  # no longer ours: the step must not run
                    return True
                charged[0] = done + 1
            return False

        def on_progress(progress: Progress) -> None:
            last[:] = [progress]
            if not beat.lost:
                self.store.progress(job, progress)

        try:
            with self.store.prepare(job) as prepared, self._scratch_dir() as scratch:
                result = self._train(
                    prepared.spec,
                    prepared.examples,
                    scratch / "model",
                    on_progress=on_progress,
                    should_stop=should_stop,
                    checkpoints=_Sink(self.store, job),
                    resume=prepared.resume,
                )
                if beat.lost:
                    raise _LeaseLost
                self.store.complete(job, result)  # seals the files before the block removes them
            return "succeeded"
        except TrainingCancelled as exc:
            if beat.lost or refused[0]:
                return "lost"
            if self.stopping and not checked[1]:
                self.store.release(job)
                return "released"
            self.store.cancelled(job, exc)
            return "cancelled"
        except _LeaseLost:
            return "lost"
        except ApplianceError as exc:
            if beat.lost:
                return "lost"
            self.store.failed(job, exc.detail)
            return "failed"
        except Exception as exc:  # noqa: BLE001 - any training error ends the job failed, with its type only
            # The message may quote training text: log the type and where, never the text.
            frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)[-8:]]
            log.error("training failed", extra={"job_id": job.id, "error_type": type(exc).__name__, "frames": frames})
            if beat.lost:
                return "lost"
            self.store.failed(job, f"training failed ({type(exc).__name__}); the operator's worker log has details")
            return "failed"

    @contextlib.contextmanager
    def _scratch_dir(self) -> Iterator[Path]:
        self._scratch.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=self._scratch))  # 0700
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
