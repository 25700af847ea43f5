"""The ledger's arithmetic: per dataset by Opacus's RDP accountant over every job's history,
per period by summing; unfinished jobs count with their whole plan."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from opacus.accountants import RDPAccountant

from appliance.errors import BudgetExceeded, InvalidInput
from appliance.training.accounting import epsilon_of
from appliance.training.budget import Caps, Charge, Ledger, Plan

NOW = datetime(2026, 11, 30, tzinfo=UTC)
CAPS = Caps(max_epsilon_per_dataset=3.0, max_epsilon_total=10.0, period_days=30, delta=1e-5)
Q = 0.01
STEPS = 300  # 3 epochs at q = 0.01


SIGMA = {1.0: 1.12, 1.5: 0.98, 2.5: 0.81, 2.9: 0.77}
"""Noise multipliers that spend about this epsilon alone (q = 0.01, 300 steps, delta 1e-5);
the exact epsilon of each is what the accountant says, computed below."""


def charge(job: str, epsilon: float, *, dataset: str = "d1", days_ago: float = 1, settled: bool = True) -> Charge:
    history = ((SIGMA[epsilon], Q, STEPS),)
    spent = epsilon_of(history, CAPS.delta)
    return Charge(job, dataset, history, CAPS.delta, spent, NOW - timedelta(days=days_ago), settled)


def plan(epsilon: float, dataset: str = "d1") -> Plan:
    history = ((SIGMA[epsilon], Q, STEPS),)
    return Plan(dataset, f"name-of-{dataset}", history, CAPS.delta, epsilon_of(history, CAPS.delta))


def test_a_datasets_spend_is_what_opacus_rdp_accountant_says_for_all_its_jobs() -> None:
    jobs = [charge("j1", 1.0), charge("j2", 1.0), charge("j3", 1.5)]
    ledger = Ledger(jobs, CAPS, NOW)
    accountant = RDPAccountant()
    accountant.history = [h for c in jobs for h in c.history]
    spend = ledger.dataset("d1")
    assert spend.spent == pytest.approx(accountant.get_epsilon(delta=CAPS.delta))
    assert spend.summed == pytest.approx(sum(c.epsilon for c in jobs))
    assert 3.6 < spend.summed < 3.9
    assert spend.spent < spend.summed  # RDP composes tighter than adding epsilons


def test_when_a_job_would_pass_the_dataset_cap_it_is_refused_naming_the_figures() -> None:
    ledger = Ledger([charge("j1", 2.5), charge("j2", 2.5)], CAPS, NOW)
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check(plan(1.5))
    exc = caught.value
    assert exc.budget == "dataset name-of-d1"
    assert exc.limit == 3.0
    assert exc.requested == pytest.approx(1.5, abs=0.05)
    assert exc.spent == pytest.approx(ledger.dataset("d1").spent)
    assert exc.would_be > 3.0
    assert "dataset name-of-d1 budget" in exc.detail and "cap of 3" in exc.detail


def test_a_job_that_fits_the_composed_budget_passes_although_the_sum_would_not() -> None:
    ledger = Ledger([charge("j1", 1.0), charge("j2", 1.0)], CAPS, NOW)
    ledger.check(plan(1.5))  # 1 + 1 + 1.5 = 3.5 summed, but composed under 3


def test_the_period_total_sums_jobs_and_forgets_those_older_than_the_period() -> None:
    old = [charge(f"old{i}", 2.5, dataset=f"o{i}", days_ago=40) for i in range(4)]
    recent = [charge(f"new{i}", 2.5, dataset=f"n{i}") for i in range(3)]
    ledger = Ledger([*old, *recent], CAPS, NOW)
    spent = sum(c.epsilon for c in recent)
    assert ledger.total().spent == pytest.approx(spent)
    assert 7.5 < spent < 7.8
    ledger.check(plan(1.5, dataset="fresh"))
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check(plan(2.9, dataset="fresh"))
    assert caught.value.budget == "tenant total over 30 days"
    assert caught.value.would_be == pytest.approx(spent + plan(2.9).epsilon)


def test_unfinished_jobs_reserve_their_whole_plan() -> None:
    ledger = Ledger([charge("running", 2.5, settled=False)], CAPS, NOW)
    assert ledger.total().reserved == pytest.approx(ledger.charges[0].epsilon)
    assert ledger.total().spent == 0
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check(plan(2.9))
    assert caught.value.spent == 0
    assert caught.value.reserved == pytest.approx(ledger.charges[0].epsilon)
    ledger.check(plan(2.9), exclude_job="running")  # the job itself, being started


def test_a_delta_above_the_policys_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"above the policy's finetune\.delta"):
        Ledger([], CAPS, NOW).check(Plan("d1", "d1", ((1.0, Q, STEPS),), 1e-4, 1.0))


def test_an_empty_ledger_spends_nothing() -> None:
    ledger = Ledger([], CAPS, NOW)
    assert ledger.dataset("d1").spent == 0
    assert ledger.total().spent == 0
    ledger.check(plan(2.9))


def test_uploads_of_the_same_content_share_one_dataset_budget() -> None:
    """Keyed by content hash, not upload: a re-upload (or one after a delete) starts no fresh budget."""
    first = dataclasses.replace(charge("j1", 2.5, dataset="upload-1"), dataset_key="hash-a")
    ledger = Ledger([first], CAPS, NOW)
    again = dataclasses.replace(plan(2.9, dataset="upload-2"), dataset_label="again", dataset_key="hash-a")
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check(again)
    assert caught.value.budget == "dataset again (with 1 other upload of the same content)"
    assert caught.value.spent == pytest.approx(first.epsilon)
    assert ledger.dataset("hash-a").dataset_ids == ("upload-1",)
    ledger.check(dataclasses.replace(again, dataset_key="hash-b"))  # other content: its own budget


def test_a_charge_without_a_content_hash_counts_by_its_dataset_id() -> None:
    ledger = Ledger([charge("j1", 2.5, dataset="gone")], CAPS, NOW)
    assert [d.key for d in ledger.datasets()] == ["gone"]
    ledger.check(plan(2.9, dataset="new"))
    with pytest.raises(BudgetExceeded):
        ledger.check(plan(2.9, dataset="gone"))
