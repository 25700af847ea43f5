"""A preallocated key/value cache with one row (slot) per running sequence.

Every layer keeps two buffers shaped ``[slots, kv_heads, capacity, head_dim]``. A sequence
owns one slot for its whole life; its tokens are written at their own positions, so a
sequence that joins is prefilled straight into a free slot, and one that finishes frees
its slot by moving the last running slot into it (one row, not the whole batch). Running
sequences always occupy slots ``0..n-1``, so a forward pass reads a plain view of the
buffers, and the attention mask (built by the runner) hides what lies past each row's
length. That replaces the dynamic cache's ``index_select`` and ``cat`` of every layer
whenever a sequence joined or finished.

The buffers grow (doubling, up to the model's context) when a sequence needs more room;
on a GPU they are allocated at full size up front, so the shapes a captured CUDA graph
saw never change.

transformers calls :meth:`SlotCache.update` from each attention layer with the new keys
and values; the runner sets which rows and positions they belong to before each pass
(:meth:`SlotCache.target`).
"""

from __future__ import annotations

from typing import Any

import torch

GROW_STEP = 256
"""Capacity grows in multiples of this many tokens."""


class SlotCache:
    """Duck-types the part of ``transformers.Cache`` that decoder layers call (``update``)."""

    is_compileable = False

    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        max_capacity: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.slots = slots
        self.max_capacity = max_capacity
        self._shape = (kv_heads, head_dim)
        self._dtype = dtype
        self._device = device
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._layers = layers
        self._allocate(min(capacity, max_capacity))
        self._rows = slice(0, 0)
        self._write: torch.Tensor | None = None
        self._row_index: torch.Tensor | None = None
        self._view = 0

    @staticmethod
    def bytes_per_token(*, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Keys and values of one token across all layers."""
        return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def _allocate(self, capacity: int) -> None:
        heads, dim = self._shape
        shape = (self.slots, heads, capacity, dim)
        keys = [torch.zeros(shape, dtype=self._dtype, device=self._device) for _ in range(self._layers)]
        values = [torch.zeros(shape, dtype=self._dtype, device=self._device) for _ in range(self._layers)]
        if self.capacity:
            for new, old in zip(keys + values, self.keys + self.values, strict=True):
                new[:, :, : self.capacity].copy_(old)
        self.keys, self.values, self.capacity = keys, values, capacity

    def reserve(self, tokens: int) -> bool:
        """Make room for ``tokens`` positions per row; True when the buffers were reallocated."""
        if tokens <= self.capacity:
            return False
        if tokens > self.max_capacity:
            raise ValueError(f"a sequence needs {tokens} positions; the cache holds {self.max_capacity}")
        grown = max(tokens, 2 * self.capacity)
        grown = min(self.max_capacity, -(-grown // GROW_STEP) * GROW_STEP)
        self._allocate(grown)
        return True

    def target(self, rows: slice, write: torch.Tensor, view: int) -> None:
        """The next pass covers slots ``rows``; row i's new tokens go to positions ``write[i]``
        (shape ``[rows, new_tokens]``); attention reads positions ``0..view-1``."""
        self._rows = rows
        self._write = write
        self._view = view
        self._row_index = torch.arange(write.shape[0], device=write.device).unsqueeze(1)

    def move(self, source: int, target: int, length: int) -> None:
        """Copy slot ``source``'s first ``length`` positions into slot ``target`` (every layer)."""
        for buffer in self.keys + self.values:
            buffer[target, :, :length].copy_(buffer[source, :, :length])

    # ---------------------------------------------------------------- what transformers calls

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._write is not None, "SlotCache.target() must be called before a forward pass"
        keys, values = self.keys[layer_idx][self._rows], self.values[layer_idx][self._rows]
        rows = self._row_index
        # [rows, heads, new, dim] -> [rows, new, heads, dim], the layout advanced indexing writes
        keys[rows, :, self._write] = key_states.transpose(1, 2).to(keys.dtype)
        values[rows, :, self._write] = value_states.transpose(1, 2).to(values.dtype)
        return keys[:, :, : self._view], values[:, :, : self._view]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._view
