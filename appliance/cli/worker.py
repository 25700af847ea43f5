"""``appliance worker``: the process that runs fine-tuning jobs (systemd: appliance-worker)."""

from __future__ import annotations

import signal
from types import FrameType

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import emit_json, err_console, json_option
from appliance.errors import ConfigError
from appliance.logs import configure_logging


@click.command("worker")
@click.option("--once", is_flag=True, help="Run the jobs waiting now, then exit (instead of polling for ever).")
@json_option
@pass_state
def worker(state: CliState, once: bool, as_json: bool) -> None:
    """Claim queued fine-tuning jobs from the database and train them.

    Runs beside `appliance serve` (same configuration). SIGTERM or Ctrl-C stops the running
    job at its next step and hands it back to the queue with its last checkpoint; a worker
    killed outright has its job taken over, after `training.lease_s`, by the next worker to
    start. On SQLite one worker runs at a time; on PostgreSQL any number."""
    from transformers.utils import logging as hf_logging

    from appliance.training import train
    from appliance.training.worker import Worker

    s = state.settings
    configure_logging(s.log.level, s.log.format)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # per-tensor bars would flood the log
    services = state.services
    if not services.schema.is_current():
        raise ConfigError("database schema is not current; run `appliance init` or `appliance db upgrade`")
    runner = Worker(
        services.job_store(),
        train,
        lease_s=s.training.lease_s,
        poll_s=s.training.poll_interval_s,
        scratch=s.training.scratch_dir,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        err_console.print(f"worker: {signal.Signals(signum).name}, stopping after the current step")
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    outcomes: list[dict[str, str]] = []

    def report(job_id: str, outcome: str) -> None:
        outcomes.append({"job": job_id, "outcome": outcome})
        if not as_json:
            err_console.print(f"job {job_id}: {outcome}")

    if not as_json:
        err_console.print(f"worker {runner.worker_id} polling for jobs every {s.training.poll_interval_s:g} s")
    runner.run(once=once, on_job=report)
    if as_json:
        emit_json({"worker": runner.worker_id, "jobs": outcomes})
