"""``appliance finetune ...``: datasets, jobs and the privacy budget, as the local operator."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, err_console, json_option, show, table
from appliance.services.dataset_rows import FORMATS, TASKS
from appliance.services.finetune import STATES, JobRequest, JobView
from appliance.services.paging import MAX_PAGE, every
from appliance.services.principal import Principal

OP = Principal.local_operator()
DATASET_COLUMNS = ("id", "name", "task", "shape", "rows", "format", "content_hash", "created_at")
JOB_COLUMNS = ("id", "state", "task", "output_model", "step", "total_steps", "epsilon_spent", "target_epsilon")
tenant_option = click.option("--tenant", required=True, help="Tenant name or id.")


@click.group("finetune")
def finetune() -> None:
    """Differentially-private fine-tuning: datasets, jobs, privacy budget."""


# -- datasets ---------------------------------------------------------------------------------


@finetune.group("dataset")
def dataset() -> None:
    """Upload, list, show and delete fine-tuning datasets."""


@dataset.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@click.option("--name", help="Dataset name (default: the file name without its suffix).")
@click.option("--task", type=click.Choice(TASKS), help="Default: from the first row's fields.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the file name (.jsonl, .csv).")
@json_option
@pass_state
def dataset_add(
    state: CliState, file: Path, tenant: str, name: str | None, task: str | None, fmt: str | None, as_json: bool
) -> None:
    """Validate FILE, anonymize every row by the tenant's policy and store it sealed.

    JSONL rows are {"text", "label"}, {"prompt", "completion"} or {"messages": [...]}; CSV
    has the columns text,label or prompt,completion. Nothing is stored if any row is bad."""
    data = file.read_bytes()
    services = state.services
    dataset_name = name or file.stem.lower()
    if as_json:
        view = services.datasets.add(OP, tenant, dataset_name, data, fmt=fmt, task=task, filename=file.name)
        emit_json(view)
        return
    with Progress(
        TextColumn("anonymizing rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console
    ) as bar:
        task_id = bar.add_task("rows", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        view = services.datasets.add(
            OP, tenant, dataset_name, data, fmt=fmt, task=task, filename=file.name, on_progress=progress
        )
    show(view, False, DATASET_COLUMNS)
    if view.label_counts:
        console.print("labels: " + ", ".join(f"{k} ({v})" for k, v in view.label_counts.items()))


@dataset.command("list")
@tenant_option
@json_option
@pass_state
def dataset_list(state: CliState, tenant: str, as_json: bool) -> None:
    """List the tenant's datasets (counts and digests, never rows)."""
    datasets = every(lambda cursor: state.services.datasets.list(OP, tenant, cursor=cursor, limit=MAX_PAGE))
    show(list(datasets), as_json, DATASET_COLUMNS, "datasets")


@dataset.command("show")
@click.argument("ref")
@tenant_option
@json_option
@pass_state
def dataset_show(state: CliState, ref: str, tenant: str, as_json: bool) -> None:
    """Show dataset REF (id or name): rows, label counts, entities anonymized, content hash."""
    view = state.services.datasets.get(OP, tenant, ref)
    if as_json:
        emit_json(view)
        return
    show(view, False, DATASET_COLUMNS)
    if view.label_counts:
        table([{"label": k, "rows": v} for k, v in view.label_counts.items()], ("label", "rows"), "labels")
    if view.entities:
        rows = [{"entity": k, **v} for k, v in view.entities.items()]
        table(rows, ("entity", "count", "action"), "personal data anonymized on upload")


@dataset.command("rm")
@click.argument("ref")
@tenant_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def dataset_rm(state: CliState, ref: str, tenant: str, yes: bool, as_json: bool) -> None:
    """Delete dataset REF and its sealed file (what its jobs spent stays charged)."""
    if not yes:
        click.confirm(f"Delete dataset {ref!r} of {tenant!r}?", abort=True)
    show(state.services.datasets.delete(OP, tenant, ref), as_json, DATASET_COLUMNS)


# -- jobs -------------------------------------------------------------------------------------


@finetune.command("start")
@tenant_option
@click.option("--dataset", "dataset_ref", required=True, help="Dataset id or name.")
@click.option("--task", type=click.Choice(["classifier", "lora"]), required=True)
@click.option("--output-model", required=True, help="The name to serve the trained model under.")
@click.option("--epsilon", "target_epsilon", type=float, required=True, help="Target epsilon of this job.")
@click.option("--base-model", help="Default: the default embedding (classifier) or chat (lora) model.")
@click.option("--delta", type=float, help="Default: a tenth of 1/rows, at most the policy's delta.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Expected (Poisson) batch size.")
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="Per-example clipping norm.")
@click.option("--lr", "learning_rate", type=float, help="Learning rate (default: the engine's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-seq-len", type=int)
@click.option("--train-top-layers", type=int, help="classifier: also train the top N encoder layers.")
@click.option("--lora-rank", type=int)
@click.option("--holdout-fraction", type=float, help="Rows kept out of training for the card's metrics.")
@json_option
@pass_state
def start(
    state: CliState,
    tenant: str,
    dataset_ref: str,
    task: str,
    output_model: str,
    target_epsilon: float,
    base_model: str | None,
    delta: float | None,
    epochs: int,
    batch_size: int,
    max_grad_norm: float,
    learning_rate: float | None,
    seed: int,
    max_seq_len: int | None,
    train_top_layers: int | None,
    lora_rank: int | None,
    holdout_fraction: float | None,
    as_json: bool,
) -> None:
    """Queue a fine-tuning job; `appliance worker` runs it. Refused when it would overspend
    the tenant's privacy budget (the message names the budget and the figures)."""
    request = JobRequest(
        dataset=dataset_ref,
        task=task,  # type: ignore[arg-type]
        output_model=output_model,
        target_epsilon=target_epsilon,
        base_model=base_model,
        delta=delta,
        epochs=epochs,
        batch_size=batch_size,
        max_grad_norm=max_grad_norm,
        learning_rate=learning_rate,
        seed=seed,
        max_seq_len=max_seq_len,
        train_top_layers=train_top_layers,
        lora_rank=lora_rank,
        holdout_fraction=holdout_fraction,
    )
    view = state.services.finetune.create(OP, tenant, request)
    if as_json:
        emit_json(view)
        return
    show(view, False, JOB_COLUMNS)
    console.print(
        f"queued: noise multiplier {view.noise_multiplier:.3g}, sample rate {view.sample_rate:.3g}, "
        f"{view.planned_steps} steps, delta {view.delta:.3g}; follow it with "
        f"`appliance finetune follow {view.id} --tenant {tenant}`"
    )


@finetune.command("list")
@tenant_option
@click.option("--state", "job_state", type=click.Choice(STATES))
@json_option
@pass_state
def job_list(state: CliState, tenant: str, job_state: str | None, as_json: bool) -> None:
    """List the tenant's jobs."""
    jobs = every(
        lambda cursor: state.services.finetune.list(OP, tenant, state=job_state, cursor=cursor, limit=MAX_PAGE)
    )
    show(list(jobs), as_json, JOB_COLUMNS, "jobs")


@finetune.command("show")
@click.argument("job_id")
@tenant_option
@json_option
@pass_state
def job_show(state: CliState, job_id: str, tenant: str, as_json: bool) -> None:
    """Show job JOB_ID with its progress."""
    view = state.services.finetune.get(OP, tenant, job_id)
    if as_json:
        emit_json(view)
        return
    columns = (*JOB_COLUMNS, "loss", "eta_s", "attempts", "model_version", "error")
    show(view, False, columns)


@finetune.command("cancel")
@click.argument("job_id")
@tenant_option
@json_option
@pass_state
def job_cancel(state: CliState, job_id: str, tenant: str, as_json: bool) -> None:
    """Cancel job JOB_ID (a running job stops at its next step; its steps stay charged)."""
    show(state.services.finetune.cancel(OP, tenant, job_id), as_json, JOB_COLUMNS)


@finetune.command("follow")
@click.argument("job_id")
@tenant_option
@click.option(
    "--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True, help="Seconds between polls."
)
@pass_state
def job_follow(state: CliState, job_id: str, tenant: str, interval: float) -> None:
    """Draw JOB_ID's progress (steps, epsilon spent, loss, ETA) until it ends. Exit status 0
    when it succeeded, 1 when it failed or was cancelled."""
    services = state.services
    view = services.finetune.get(OP, tenant, job_id)
    with Progress(
        TextColumn("[bold]{task.fields[state]}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("epsilon {task.fields[epsilon]} of {task.fields[target]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
    ) as bar:
        task_id = bar.add_task(job_id, total=view.total_steps or None, **_fields(view))  # type: ignore[arg-type]
        while True:
            bar.update(task_id, completed=view.step, total=view.total_steps or None, **_fields(view))  # type: ignore[arg-type]
            if view.finished:
                break
            time.sleep(interval)
            view = services.finetune.get(OP, tenant, job_id)
    spent = f"epsilon spent {view.epsilon_spent:.4g}"
    if view.state == "succeeded":
        console.print(f"[green]succeeded[/green]: {view.output_model} version {view.model_version}, {spent}")
        return
    err_console.print(f"job {view.state}: {view.error or spent}")
    sys.exit(1)


def _fields(view: JobView) -> dict[str, str]:
    eta = "-" if view.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(max(0.0, view.eta_s)))
    return {
        "state": view.state,
        "epsilon": f"{view.epsilon_spent:.3g}",
        "target": f"{view.target_epsilon:.3g}",
        "loss": "-" if view.loss is None else f"{view.loss:.4g}",
        "eta": eta,
    }


# -- budget -----------------------------------------------------------------------------------


@finetune.command("budget")
@tenant_option
@json_option
@pass_state
def budget(state: CliState, tenant: str, as_json: bool) -> None:
    """The tenant's privacy budget: per dataset (RDP-composed) and in the period (summed)."""
    report = state.services.privacy_budget.report(OP, tenant)
    if as_json:
        emit_json(report)
        return
    console.print(
        f"tenant {report.tenant}: {report.total_spent:.4g} of {report.total_limit:.4g} epsilon spent in the last "
        f"{report.period_days} days ({report.total_reserved:.4g} reserved by unfinished jobs, "
        f"{report.total_remaining:.4g} left); delta {report.delta:.3g}, accountant {report.accountant}"
    )
    table(
        report.datasets,
        ("dataset_id", "name", "jobs", "epsilon_spent", "epsilon_reserved", "epsilon_summed", "limit", "remaining"),
        f"per dataset (limit {report.per_dataset_limit:.4g}, composed with the RDP accountant)",
    )
    table(
        report.charges,
        ("job_id", "dataset_id", "state", "steps", "noise_multiplier", "sample_rate", "delta", "epsilon", "settled"),
        "charges",
    )
