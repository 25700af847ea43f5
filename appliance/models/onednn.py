"""Capacities of the per-shape caches behind torch's CPU kernels, set before the first model runs.

torch runs some CPU operations through oneDNN: every bfloat16 matrix product (the name model
of PII detection runs in bfloat16 where the CPU has AVX512-BF16) and GELU in float32 and
bfloat16 (both MiniLM encoders). Each new input shape gets a JIT-compiled primitive, kept in
two LRU caches of 1,024 entries each by default: oneDNN's primitive cache
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and ideep's, the layer torch calls oneDNN through
(``LRU_CACHE_CAPACITY``). Texts of every length make every shape, so under real traffic both
caches fill: measured with the name model alone on varied texts, malloc's in-use memory rose
by 525 MiB within 500 calls and stayed there, and the churn of a full cache left 420 MiB more
free but held by malloc. A bfloat16 product's primitive takes about 0.27 MiB, a GELU's 28 KiB.

The defaults here keep 64 oneDNN primitives (within one forward pass every layer reuses its
shapes, so a pass still compiles each once) and one ideep entry (ideep's cache made no
measurable difference to speed; 0 crashes torch at its first bfloat16 product). Measured on
2 cores: the name model's growth falls to 17 MiB; PII detection costs 5 to 17 % more CPU per
call (1 to 4 ms) where a full 1,024-entry cache held every shape of the traffic; embeddings
cost the same. docs/hardening.md (Soak) has the numbers and how they were taken.

Each library reads its variable once, when it first needs the cache, so these must be set
before the first oneDNN call in the process: ``appliance serve`` sets them first thing. An
operator's value in the environment wins (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024`` restores
torch's default where speed matters more than memory).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from appliance.errors import ConfigError

CACHE_CAPACITIES: dict[str, str] = {
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64",
    "LRU_CACHE_CAPACITY": "1",
}
"""Environment variable -> the appliance's default capacity (torch's own default: 1024 each)."""


def bound_onednn_caches(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`CACHE_CAPACITIES` in ``environ`` (the process environment when None) where
    the operator set nothing; returns the capacities in force. Raises :class:`ConfigError`
    for a value that is no whole number, and for ``LRU_CACHE_CAPACITY=0``, which crashes the
    process at the first bfloat16 product."""
    env = os.environ if environ is None else environ
    for name, value in CACHE_CAPACITIES.items():
        env.setdefault(name, value)
        if not env[name].strip().lstrip("+-").isdigit():
            raise ConfigError(f"{name} must be a whole number of cache entries, not {env[name]!r}; unset it")
    if int(env["LRU_CACHE_CAPACITY"]) <= 0:
        raise ConfigError("LRU_CACHE_CAPACITY must be 1 or more (0 crashes torch's bfloat16 kernels); unset it")
    return {name: env[name] for name in CACHE_CAPACITIES}
