"""Privacy accounting: thin wrappers over Opacus's own accountants, so that the engine, the
budget ledger and a reviewer with Opacus at hand all compute the same epsilon.

A run's privacy is its accountant *history*: ``(noise_multiplier, sample_rate, steps)``
entries. Opacus's RDP and PRV accountants compose any list of entries (the RDP curves add
up), so the ledger can charge a dataset for several jobs, or a cancelled job for the steps
it ran, by concatenating histories and asking :func:`epsilon_of`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from appliance.errors import InvalidInput
from appliance.training.spec import AccountantName, HistoryEntry


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: Opacus samples at rate ``1 / len(data_loader)``, and a
    data loader of ``n`` rows in batches of ``batch_size`` has ``ceil(n / batch_size)`` batches."""
    if n_examples < 1 or batch_size < 1:
        raise InvalidInput("accounting needs at least one example and a positive batch size")
    return math.ceil(n_examples / batch_size)


def sample_rate_for(n_examples: int, batch_size: int) -> float:
    """Poisson sampling rate, exactly as ``make_private_with_epsilon`` derives it."""
    return 1 / steps_per_epoch(n_examples, batch_size)


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    accountant: AccountantName = "rdp",
) -> float:
    """The noise multiplier that reaches ``target_epsilon`` after ``epochs`` (or ``steps``).

    Opacus's ``get_noise_multiplier`` (the search ``make_private_with_epsilon`` runs), cached:
    a binary search over accountant evaluations takes a second or more, and the ledger and
    the engine ask for the same parameters. An epoch is ``round(1 / sample_rate)`` steps, the
    number the engine runs (Opacus's own ``int(epochs / sample_rate)`` can fall one step short
    through floating point, e.g. for 93 batches per epoch). Raises :class:`InvalidInput` when
    the budget is too small to reach with any noise.
    """
    if (epochs is None) == (steps is None):
        raise InvalidInput("give either epochs or steps to find a noise multiplier")
    if steps is None:
        assert epochs is not None
        steps = epochs * round(1 / sample_rate)
    return _noise_multiplier(float(target_epsilon), float(delta), float(sample_rate), int(steps), accountant)


@functools.lru_cache(maxsize=256)
def _noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with quiet_order_warning():
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except ValueError as exc:
        raise InvalidInput(f"cannot reach epsilon {target_epsilon} at delta {delta}: {exc}") from None


@contextmanager
def quiet_order_warning() -> Iterator[None]:
    """Silence the RDP accountant's "optimal order is the smallest/largest alpha" warning. It
    fires during the noise search at huge trial sigmas, and early in a run when the epsilon
    spent is tiny; the bound it returns is valid either way (only possibly loose), and the
    warning would otherwise reach every job's log, or fail a caller that turns warnings into
    errors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (smallest|largest) alpha", category=UserWarning)
        yield


def epsilon_of(history: Iterable[HistoryEntry], delta: float, accountant: AccountantName = "rdp") -> float:
    """Epsilon at ``delta`` after all of ``history`` (0 for an empty history)."""
    from opacus.accountants import create_accountant

    entries = [(float(sigma), float(q), int(steps)) for sigma, q, steps in history if int(steps) > 0]
    if not entries:
        return 0.0
    acct = create_accountant(mechanism=accountant)
    acct.history = entries
    with quiet_order_warning():
        return float(acct.get_epsilon(delta=delta))


def compact(history: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """Merge neighbouring entries with the same noise and sample rate (Opacus appends one
    entry per step run in a row; the merged list composes to the same epsilon)."""
    out: list[HistoryEntry] = []
    for sigma, q, steps in history:
        if out and out[-1][0] == sigma and out[-1][1] == q:
            out[-1] = (sigma, q, out[-1][2] + steps)
        else:
            out.append((sigma, q, steps))
    return out
