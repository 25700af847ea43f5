"""Token sampling for a whole batch at once, on the model's device, without host round trips.

Each row has its own temperature, top-p and seed. Greedy rows (temperature 0) take the
arg-max. Sampled rows use the Gumbel-max trick: the arg-max of ``logits / T + G`` is a
draw from ``softmax(logits / T)`` when ``G`` is standard Gumbel noise, and top-p is applied
first by masking the logits outside the nucleus. The noise is not drawn from a stateful
generator but computed from a counter-based hash of (seed, step, token id), so

- a row's draw depends only on its own seed and position: it is the same whichever other
  requests share the batch, and a request repeated with the same seed repeats its answer;
- the whole step is a fixed sequence of tensor operations with no ``.item()`` and no
  data-dependent branching, so it runs inside a captured CUDA graph.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``x * factor mod 2**32`` for int64 ``x`` < 2**32, without overflowing int64."""
    low, high = x & 0xFFFF, x >> 16
    return (low * factor + (((high * factor) & 0xFFFF) << 16)) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (Wellons' lowbias32) on int64 tensors holding values < 2**32."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform floats in (0, 1), shape ``[rows, vocab]``, a pure function of (seed, step, column)."""
    folded = (seeds ^ (seeds >> 32)) & _MASK32
    base = hash32(hash32(folded) ^ hash32(steps + 0x9E3779B9))
    columns = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    bits = hash32(base.unsqueeze(1) + columns.unsqueeze(0) * 0x632BE5AB)
    return ((bits >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def top_p_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``logits`` with every token outside each row's nucleus set to -inf (the most likely
    token always stays). Rows with ``top_p >= 1`` are returned unchanged."""
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop = (before > top_p.unsqueeze(1)) & (top_p.unsqueeze(1) < 1.0)
    dropped = torch.zeros_like(drop).scatter(1, order, drop)
    return logits.masked_fill(dropped, float("-inf"))


def sample(
    logits: torch.Tensor,
    *,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    use_top_p: bool = True,
    greedy_only: bool = False,
) -> torch.Tensor:
    """One token per row of ``logits`` (``[rows, vocab]``), as an int64 tensor on the same device.

    ``temperature`` (float, 0 = greedy), ``top_p`` (float), ``seeds`` and ``steps`` (int64)
    hold one value per row. ``use_top_p`` False skips the sort when no row asks for top-p
    (a choice made on the host from the requests, never from tensor values); ``greedy_only``
    True (every row greedy, also known on the host) skips the noise altogether.
    """
    scores = logits.float()
    greedy = scores.argmax(dim=-1)
    if greedy_only:
        return greedy
    tempered = scores / temperature.clamp(min=1e-5).unsqueeze(1)
    if use_top_p:
        tempered = top_p_mask(tempered, top_p)
    gumbel = -torch.log(-torch.log(uniform(seeds, steps, scores.shape[-1])))
    drawn = (tempered + gumbel).argmax(dim=-1)
    return torch.where(temperature > 1e-5, drawn, greedy)
