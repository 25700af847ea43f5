"""The accounting helpers give exactly what Opacus's own accountants give."""

from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from appliance.errors import InvalidInput
from appliance.training import epsilon_of, noise_multiplier_for, sample_rate_for, steps_per_epoch
from appliance.training.accounting import compact, quiet_order_warning


@pytest.mark.parametrize(("n", "batch", "steps"), [(1000, 64, 16), (64, 64, 1), (65, 64, 2), (10, 100, 1)])
def test_steps_per_epoch_is_the_number_of_batches_of_a_data_loader(n: int, batch: int, steps: int) -> None:
    assert steps_per_epoch(n, batch) == steps
    assert sample_rate_for(n, batch) == 1 / steps


def test_the_noise_multiplier_is_opacus_own_answer() -> None:
    ours = noise_multiplier_for(3.0, 1e-5, 0.05, epochs=4)
    with quiet_order_warning():
        theirs = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=0.05, epochs=4)
    assert ours == theirs


@pytest.mark.parametrize(("accountant", "cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_of_a_history_equals_an_opacus_accountant_that_ran_those_steps(accountant: str, cls: type) -> None:
    acct = cls()
    for _ in range(30):
        acct.step(noise_multiplier=1.1, sample_rate=0.02)
    for _ in range(10):
        acct.step(noise_multiplier=0.9, sample_rate=0.05)
    history = [(1.1, 0.02, 30), (0.9, 0.05, 10)]
    assert epsilon_of(history, 1e-5, accountant) == pytest.approx(acct.get_epsilon(delta=1e-5), rel=1e-9)  # type: ignore[arg-type]


def test_the_noise_for_a_target_reaches_that_target_after_the_planned_steps() -> None:
    sigma = noise_multiplier_for(8.0, 1e-5, 0.01, epochs=3)
    eps = epsilon_of([(sigma, 0.01, 300)], 1e-5)
    assert 7.9 <= eps <= 8.0


def test_an_empty_history_spent_nothing() -> None:
    assert epsilon_of([], 1e-5) == 0.0
    assert epsilon_of([(1.0, 0.1, 0)], 1e-5) == 0.0


def test_histories_compose_so_two_halves_cost_the_same_as_the_whole() -> None:
    whole = epsilon_of([(1.0, 0.02, 200)], 1e-5)
    halves = epsilon_of([(1.0, 0.02, 120), (1.0, 0.02, 80)], 1e-5)
    assert halves == pytest.approx(whole, rel=1e-12)
    assert compact([(1.0, 0.02, 120), (1.0, 0.02, 80), (2.0, 0.02, 5)]) == [(1.0, 0.02, 200), (2.0, 0.02, 5)]


def test_a_budget_that_no_noise_reaches_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot reach epsilon"):
        noise_multiplier_for(1e-9, 1e-12, 1.0, steps=10_000_000)


def test_accounting_needs_rows() -> None:
    with pytest.raises(InvalidInput):
        steps_per_epoch(0, 8)


def test_an_epoch_is_a_whole_number_of_steps_even_where_floating_point_says_otherwise() -> None:
    q = sample_rate_for(93, 1)
    assert int(1 / q) == 92  # what Opacus's sampler and int(epochs / q) would count
    with quiet_order_warning():
        expected = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=q, steps=3 * 93)
    assert noise_multiplier_for(3.0, 1e-5, q, epochs=3) == expected
