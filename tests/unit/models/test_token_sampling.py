"""Batched sampling: greedy rows, seeded draws that ignore their neighbours, top-p, fidelity."""

from __future__ import annotations

import math

import pytest
import torch

from appliance.models.token_sampling import sample, top_p_mask, uniform


def params(rows: int, temperature: float, top_p: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "temperature": torch.full((rows,), temperature),
        "top_p": torch.full((rows,), top_p),
        "seeds": torch.arange(rows, dtype=torch.long) + seed,
        "steps": torch.zeros(rows, dtype=torch.long),
    }


@pytest.mark.parametrize("greedy_only", [False, True])
def test_greedy_rows_take_the_most_likely_token(greedy_only: bool) -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample(logits, **params(4, 0.0), greedy_only=greedy_only), logits.argmax(-1))


def test_a_rows_draw_depends_on_its_seed_and_step_only() -> None:
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(1))
    alone = sample(
        logits,
        temperature=torch.tensor([1.0]),
        top_p=torch.tensor([1.0]),
        seeds=torch.tensor([77]),
        steps=torch.tensor([5]),
    )
    crowd = sample(
        torch.cat([torch.randn(2, 1000), logits, torch.randn(1, 1000)]),
        temperature=torch.tensor([0.7, 0.0, 1.0, 1.2]),
        top_p=torch.tensor([0.5, 1.0, 1.0, 0.9]),
        seeds=torch.tensor([1, 2, 77, 3]),
        steps=torch.tensor([9, 9, 5, 9]),
    )
    assert crowd[2] == alone[0]
    later = [
        sample(
            logits,
            temperature=torch.tensor([1.0]),
            top_p=torch.tensor([1.0]),
            seeds=torch.tensor([77]),
            steps=torch.tensor([s]),
        )
        for s in range(6, 30)
    ]
    assert len({int(t) for t in later}) > 5  # the step moves the draw


def test_uniform_noise_is_uniform_and_differs_across_seeds() -> None:
    u = uniform(torch.tensor([1, 2]), torch.tensor([0, 0]), 20000)
    assert float(u.min()) > 0
    assert float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert not torch.equal(u[0], u[1])


def test_draws_follow_the_softmax_of_the_tempered_logits() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 4000
    drawn = sample(
        logits.expand(n, 4),
        temperature=torch.full((n,), 0.8),
        top_p=torch.ones(n),
        seeds=torch.arange(n, dtype=torch.long),
        steps=torch.zeros(n, dtype=torch.long),
    )
    expected = torch.softmax(logits[0] / 0.8, -1)
    counts = torch.bincount(drawn, minlength=4).float() / n
    for observed, p in zip(counts.tolist(), expected.tolist(), strict=True):
        assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize(("top_p", "kept"), [(1.0, 4), (0.9, 3), (0.5, 1), (0.01, 1)])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p: float, kept: int) -> None:
    logits = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]]))
    masked = top_p_mask(logits, torch.tensor([top_p]))
    assert int(torch.isfinite(masked).sum()) == kept
    drawn = sample(
        logits.expand(200, 4),
        temperature=torch.ones(200),
        top_p=torch.full((200,), top_p),
        seeds=torch.arange(200, dtype=torch.long),
        steps=torch.zeros(200, dtype=torch.long),
    )
    assert int(drawn.max()) < kept
