"""``python -m tests.integration.worker_crash POINT worker [ARGS]``: ``appliance worker`` that
SIGKILLs itself at one point of a job's life, so crash tests kill it exactly there.

Points:

- ``checkpoint:N``: right after the transaction that recorded step N's checkpoint committed
  (N steps have run, step N+1 has not);
- ``registering``: a new model version was written (flushed), its transaction not committed;
- ``registered``: right after the transaction that wrote a new model version committed.

The hooks are SQLAlchemy's session events in this process only; no component of the
appliance is replaced or patched.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from appliance.db.models import FinetuneJob, ModelVersion


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    checkpoint_step = int(point.split(":", 1)[1]) if point.startswith("checkpoint:") else None
    if checkpoint_step is None and point not in ("registering", "registered"):
        raise SystemExit(f"unknown crash point {point!r}")

    def after_flush(session: Session, _context: Any) -> None:
        if any(isinstance(o, ModelVersion) for o in session.new):
            if point == "registering":
                _die()
            session.info["crash"] = point == "registered"
        if checkpoint_step is not None and any(
            isinstance(o, FinetuneJob) and o.checkpoint_blob and o.checkpoint_step == checkpoint_step
            for o in session.dirty
        ):
            session.info["crash"] = True

    def after_commit(session: Session) -> None:
        if session.info.pop("crash", False):
            _die()

    def after_rollback(session: Session) -> None:
        session.info.pop("crash", None)

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "after_commit", after_commit)
    event.listen(Session, "after_rollback", after_rollback)


if __name__ == "__main__":
    install(sys.argv[1])
    from appliance.cli.main import main

    sys.argv = ["appliance", *sys.argv[2:]]
    main()
