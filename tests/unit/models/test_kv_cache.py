"""The slot cache: rows written at their own positions, moved one at a time, grown in place."""

from __future__ import annotations

import pytest
import torch

from appliance.models.kv_cache import GROW_STEP, SlotCache


def cache(capacity: int = 8, max_capacity: int = 4096) -> SlotCache:
    return SlotCache(
        layers=2,
        slots=3,
        kv_heads=1,
        head_dim=2,
        capacity=capacity,
        max_capacity=max_capacity,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def states(rows: int, new: int, value: float) -> torch.Tensor:
    return torch.full((rows, 1, new, 2), value)


def test_each_row_is_written_at_its_own_positions_and_read_as_a_view() -> None:
    c = cache()
    c.target(slice(1, 3), torch.tensor([[2], [5]]), view=6)
    keys, _ = c.update(states(2, 1, 7.0), states(2, 1, 9.0), layer_idx=0)
    assert keys.shape == (2, 1, 6, 2)
    assert c.keys[0][1, 0, 2].tolist() == [7.0, 7.0]
    assert c.keys[0][2, 0, 5].tolist() == [7.0, 7.0]
    assert c.values[0][2, 0, 5].tolist() == [9.0, 9.0]
    assert c.keys[0][0].abs().sum() == 0  # slot 0 untouched
    assert c.keys[1].abs().sum() == 0  # other layers untouched


def test_moving_a_slot_copies_only_that_row_of_every_layer() -> None:
    c = cache()
    c.target(slice(2, 3), torch.arange(4).unsqueeze(0), view=4)
    for layer in range(2):
        c.update(states(1, 4, 3.0 + layer), states(1, 4, 5.0), layer_idx=layer)
    c.move(2, 0, length=4)
    for layer in range(2):
        assert torch.equal(c.keys[layer][0, :, :4], c.keys[layer][2, :, :4])
    assert c.keys[0][1].abs().sum() == 0


@pytest.mark.parametrize(("need", "capacity"), [(8, 8), (9, GROW_STEP), (GROW_STEP + 1, 2 * GROW_STEP)])
def test_growing_keeps_what_is_stored(need: int, capacity: int) -> None:
    c = cache()
    c.target(slice(0, 1), torch.tensor([[3]]), view=4)
    c.update(states(1, 1, 1.5), states(1, 1, 2.5), layer_idx=1)
    c.reserve(need)
    assert c.capacity == capacity
    assert c.keys[1][0, 0, 3].tolist() == [1.5, 1.5]
    assert c.values[1][0, 0, 3].tolist() == [2.5, 2.5]


def test_a_sequence_longer_than_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match="cache holds 16"):
        cache(max_capacity=16).reserve(17)
