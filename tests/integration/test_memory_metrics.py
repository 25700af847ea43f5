"""Process memory by owner at /metrics: SQLite's heap and glibc malloc's state, read at scrape
time from the running process through the real app."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.support import Stack

MIB = 1 << 20
MEMORY_GAUGES = (
    "appliance_sqlite_heap_bytes",
    "appliance_sqlite_heap_highwater_bytes",
    "appliance_malloc_in_use_bytes",
    "appliance_malloc_free_bytes",
    "appliance_malloc_arena_bytes",
)


def _gauges(client: httpx.Client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    values = {}
    for line in r.text.splitlines():
        name, _, value = line.partition(" ")
        if name in MEMORY_GAUGES:
            values[name] = float(value)
    return values


def test_memory_gauges_are_served_without_a_key(stack: Stack) -> None:
    values = _gauges(stack.client())
    assert set(values) == set(MEMORY_GAUGES)
    malloc = {k: v for k, v in values.items() if "malloc" in k}
    assert all(v > 0 for v in malloc.values()), values
    if stack.services.engine.dialect.name == "sqlite":  # the server's own pooled connections
        assert values["appliance_sqlite_heap_bytes"] > 0, values
    # One mallinfo2() per scrape: what malloc took from the system is what is in use plus what is free.
    assert values["appliance_malloc_arena_bytes"] == (
        values["appliance_malloc_in_use_bytes"] + values["appliance_malloc_free_bytes"]
    )
    assert values["appliance_sqlite_heap_highwater_bytes"] >= values["appliance_sqlite_heap_bytes"]


def test_sqlite_heap_follows_a_page_cache_filling_and_being_freed(stack: Stack, tmp_path: Path) -> None:
    """A connection in this process (the server's process) reads 8 MiB of table into a page
    cache big enough to hold it: the gauge rises by most of that, and falls when it closes."""
    db = tmp_path / "fill.db"
    with sqlite3.connect(db) as writer:
        writer.execute("CREATE TABLE t (x TEXT)")
        writer.executemany("INSERT INTO t VALUES (?)", (("x" * 1000,) for _ in range(8 * 1024)))
    writer.close()
    client = stack.client()
    before = _gauges(client)["appliance_sqlite_heap_bytes"]
    reader = sqlite3.connect(db)
    try:
        reader.execute("PRAGMA cache_size = -65536")  # 64 MiB: the whole table stays cached
        assert reader.execute("SELECT sum(length(x)) FROM t").fetchone() == (8 * 1024 * 1000,)
        during = _gauges(client)
    finally:
        reader.close()
    after = _gauges(client)["appliance_sqlite_heap_bytes"]
    assert during["appliance_sqlite_heap_bytes"] - before > 6 * MIB, (before, during)
    assert during["appliance_sqlite_heap_bytes"] - after > 6 * MIB, (during, after)
    assert during["appliance_sqlite_heap_highwater_bytes"] >= during["appliance_sqlite_heap_bytes"]
