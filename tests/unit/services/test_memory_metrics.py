"""The process-memory readers: real libraries, and no samples (never an error) where a library
or a function is missing."""

from __future__ import annotations

import ctypes.util
import sqlite3

from prometheus_client import CollectorRegistry, generate_latest

from appliance.services.metrics import (
    ProcessMemoryCollector,
    malloc_memory_reader,
    sqlite_memory_reader,
    stdlib_sqlite_library,
)

MIB = 1 << 20


def test_missing_libraries_and_functions_give_no_reader() -> None:
    assert sqlite_memory_reader(None) is None
    assert sqlite_memory_reader("/nonexistent/libsqlite3.so.0") is None
    libc = ctypes.util.find_library("c")
    assert libc is not None
    assert sqlite_memory_reader(libc) is None  # loads, but has no sqlite3_memory_used
    assert malloc_memory_reader("/nonexistent/libc.so.6") is None
    libz = ctypes.util.find_library("z")
    assert libz is not None
    assert malloc_memory_reader(libz) is not None  # found through libz's dependency on libc


def test_a_collector_without_readers_yields_nothing_and_scrapes_cleanly() -> None:
    registry = CollectorRegistry()
    registry.register(ProcessMemoryCollector(sqlite=None, malloc=None))
    assert generate_latest(registry) == b""
    registry = CollectorRegistry()
    registry.register(
        ProcessMemoryCollector(sqlite=sqlite_memory_reader("/nonexistent"), malloc=malloc_memory_reader())
    )
    text = generate_latest(registry).decode()
    assert "appliance_sqlite_heap_bytes" not in text
    assert "appliance_malloc_in_use_bytes " in text


def test_the_stdlib_sqlite_is_found_and_counts_its_connections() -> None:
    read = sqlite_memory_reader(stdlib_sqlite_library())
    assert read is not None
    before = read().used
    con = sqlite3.connect(":memory:")  # its pages live in its page cache, on SQLite's heap
    try:
        con.execute("CREATE TABLE t (x BLOB)")
        con.executemany("INSERT INTO t VALUES (?)", ((b"x" * 1000,) for _ in range(4 * 1024)))
        assert read().used - before > 2 * MIB
    finally:
        con.close()
    assert read().used - before < MIB


def test_malloc_in_use_sees_a_large_allocation() -> None:
    read = malloc_memory_reader()
    assert read is not None
    before = read()
    block = bytearray(64 * MIB)  # beyond pymalloc's 512 bytes: malloc (an mmapped block)
    during = read()
    del block
    after = read()
    assert during.in_use - before.in_use >= 64 * MIB
    assert during.in_use - after.in_use >= 64 * MIB
    assert during.arena == during.in_use + during.free
