"""The privacy-budget ledger's arithmetic: what a tenant has spent, and whether a job fits.

Storage lives in ``appliance.services.privacy_budget``; this module only composes. Every
job is one :class:`Charge`: the accountant history it ran (or, while unfinished, the history
it is planned to run) and the epsilon that alone spent at its own delta.

Two budgets, composed differently on purpose:

- **Per dataset**, for ever: the histories of every job on the dataset are concatenated and
  handed to Opacus's RDP accountant (:func:`appliance.training.accounting.epsilon_of`) at the
  policy's delta. RDP composition is tight: three jobs of epsilon 1 on one dataset compose
  to well under 3, so a dataset can be used again without the budget running out as fast as
  summing would make it.
- **Per tenant and period** (``period_days``, a sliding window): the jobs' own epsilons are
  summed (basic composition, and their deltas add up too). Conservative: it holds even when
  the same person is in several datasets, which the appliance cannot know.

A dataset here is its *content*, not its upload: charges are keyed by the dataset's content
hash (:attr:`Charge.dataset_key`), so two uploads of the same rows share one budget, and so
do an upload and a re-upload after the first was deleted (its charges stay). Rows that
differ at all (an edited row, an added one) are another dataset to this ledger; the tenant's
period total is what bounds overlapping datasets.

Unfinished jobs count with their whole plan (reserved), so two jobs queued at once cannot
together overspend; a finished, cancelled or failed job counts with the steps it ran.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.errors import BudgetExceeded, InvalidInput
from appliance.training.accounting import epsilon_of
from appliance.training.spec import HistoryEntry

TOLERANCE = 1e-9
"""Relative slack for floating-point noise when a job lands exactly on a cap."""


@functools.lru_cache(maxsize=4096)
def _epsilon(history: tuple[HistoryEntry, ...], delta: float) -> float:
    return epsilon_of(history, delta)


def composed(history: Iterable[HistoryEntry], delta: float) -> float:
    """RDP composition of ``history`` at ``delta`` (order does not matter, so equal sets of
    entries share one cached answer: Opacus takes tens of milliseconds per history)."""
    return _epsilon(tuple(sorted(history)), delta)


@dataclass(frozen=True)
class Caps:
    """The policy's ``finetune`` budget."""

    max_epsilon_per_dataset: float
    max_epsilon_total: float
    period_days: int
    delta: float


@dataclass(frozen=True)
class Charge:
    """One job in the ledger. For an unfinished job (``settled`` false) the history and
    epsilon are its plan, or what it ran if that is already more."""

    job_id: str
    dataset_id: str
    history: tuple[HistoryEntry, ...]
    delta: float
    epsilon: float
    charged_at: datetime
    settled: bool
    dataset_key: str = ""
    """The dataset's content hash: what the per-dataset budget is kept by. Empty only for a
    charge recorded before content hashes were (its dataset was already gone): it then
    counts by ``dataset_id`` alone."""

    @property
    def key(self) -> str:
        return self.dataset_key or self.dataset_id

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)


@dataclass(frozen=True)
class Plan:
    """What a job asks for before it runs."""

    dataset_id: str
    dataset_label: str
    """How a refusal names the dataset (its name)."""
    history: tuple[HistoryEntry, ...]
    delta: float
    epsilon: float
    dataset_key: str = ""
    """The dataset's content hash (see :attr:`Charge.dataset_key`); empty: ``dataset_id``."""

    @property
    def key(self) -> str:
        return self.dataset_key or self.dataset_id


@dataclass(frozen=True)
class DatasetSpend:
    key: str
    """The content hash the spend is kept by (see :attr:`Charge.dataset_key`)."""
    dataset_ids: tuple[str, ...]
    """Every upload with this content that a job was charged for, oldest charge first."""
    jobs: int
    spent: float
    """RDP composition of the finished jobs' histories, at the policy's delta."""
    with_reserved: float
    """... and of the unfinished jobs' plans as well."""
    summed: float
    """The finished jobs' epsilons added up, for comparison (what basic composition would say)."""


@dataclass(frozen=True)
class TotalSpend:
    period_days: int
    since: datetime
    spent: float
    reserved: float
    delta_spent: float
    jobs: int


def _in_period(charge: Charge, since: datetime) -> bool:
    return charge.charged_at >= since


def _over(value: float, cap: float) -> bool:
    return value > cap * (1 + TOLERANCE)


class Ledger:
    """A tenant's charges at one moment (``now``), under its policy's caps."""

    def __init__(self, charges: Iterable[Charge], caps: Caps, now: datetime) -> None:
        self.charges = list(charges)
        self.caps = caps
        self.now = now

    @property
    def since(self) -> datetime:
        return self.now - timedelta(days=self.caps.period_days)

    def dataset(self, key: str) -> DatasetSpend:
        """What the dataset with content hash ``key`` spent, over every upload of it."""
        mine = sorted((c for c in self.charges if c.key == key), key=lambda c: c.charged_at)
        settled = [h for c in mine if c.settled for h in c.history]
        return DatasetSpend(
            key=key,
            dataset_ids=tuple(dict.fromkeys(c.dataset_id for c in mine)),
            jobs=len(mine),
            spent=composed(settled, self.caps.delta),
            with_reserved=composed([h for c in mine for h in c.history], self.caps.delta),
            summed=sum(c.epsilon for c in mine if c.settled),
        )

    def datasets(self) -> list[DatasetSpend]:
        return [self.dataset(k) for k in sorted({c.key for c in self.charges})]

    def total(self) -> TotalSpend:
        recent = [c for c in self.charges if _in_period(c, self.since) or not c.settled]
        return TotalSpend(
            period_days=self.caps.period_days,
            since=self.since,
            spent=sum(c.epsilon for c in recent if c.settled),
            reserved=sum(c.epsilon for c in recent if not c.settled),
            delta_spent=sum(c.delta for c in recent if c.settled and c.steps > 0),
            jobs=len(recent),
        )

    def check(self, plan: Plan, *, exclude_job: str | None = None) -> None:
        """Raise :class:`BudgetExceeded` when ``plan`` would take the dataset's or the
        period's budget past its cap (``exclude_job``: the job being started, already in the
        ledger as a reservation), or :class:`InvalidInput` for a delta above the policy's."""
        if _over(plan.delta, self.caps.delta):
            raise InvalidInput(f"delta {plan.delta:.3g} is above the policy's finetune.delta of {self.caps.delta:.3g}")
        others = Ledger([c for c in self.charges if c.job_id != exclude_job], self.caps, self.now)
        spend = others.dataset(plan.key)
        histories: Sequence[HistoryEntry] = [h for c in others.charges if c.key == plan.key for h in c.history]
        # At the policy's delta the plan alone can come out a hair below its own target: never less.
        would_be = max(composed([*histories, *plan.history], self.caps.delta), plan.epsilon)
        if _over(would_be, self.caps.max_epsilon_per_dataset):
            shared = len(set(spend.dataset_ids) - {plan.dataset_id})
            also = f" (with {shared} other upload{'s' if shared > 1 else ''} of the same content)" if shared else ""
            raise BudgetExceeded(
                f"dataset {plan.dataset_label}{also}",
                limit=self.caps.max_epsilon_per_dataset,
                spent=spend.spent,
                reserved=max(0.0, spend.with_reserved - spend.spent),
                requested=plan.epsilon,
                would_be=would_be,
            )
        total = others.total()
        would_total = total.spent + total.reserved + plan.epsilon
        if _over(would_total, self.caps.max_epsilon_total):
            raise BudgetExceeded(
                f"tenant total over {self.caps.period_days} days",
                limit=self.caps.max_epsilon_total,
                spent=total.spent,
                reserved=total.reserved,
                requested=plan.epsilon,
                would_be=would_total,
            )
