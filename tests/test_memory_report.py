"""The memory figures behind ``tokenyield_memory_bytes``, read from real RocksDB databases
and a real chdb engine (the worker-level check is in tests/test_pipeline.py)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import rocksdict

from streams.ops.memory_report import (
    clickhouse_bytes,
    python_traced_bytes,
    resident_bytes,
    rocksdb_bytes,
)
from tests.clickhouse_fixtures import LoadedClickHouse, loaded_clickhouse

__all__ = ["loaded_clickhouse"]  # the fixture, imported for pytest


def test_rocksdb_figures_sum_every_partition_database_of_every_table(tmp_path: Path) -> None:
    databases = {p: rocksdict.Rdict(str(tmp_path / f"state-{p}.db")) for p in range(2)}
    rollup = {0: rocksdict.Rdict(str(tmp_path / "rollup-0.db"))}
    try:
        tables = [SimpleNamespace(data=SimpleNamespace(_dbs=databases)),
                  SimpleNamespace(data=SimpleNamespace(_dbs=rollup)),
                  SimpleNamespace(data=SimpleNamespace())]  # a memory store: no databases
        empty = rocksdb_bytes(tables)
        for i in range(20_000):
            databases[i % 2][f"unit-{i}".encode()] = b"x" * 400
        filled = rocksdb_bytes(tables)
        assert set(filled) == {"rocksdb_memtables", "rocksdb_block_cache",
                               "rocksdb_table_readers"}
        # 20,000 values of 400 bytes sit in the two state databases' memtables.
        assert filled["rocksdb_memtables"] - empty["rocksdb_memtables"] > 20_000 * 400
        only_rollup = rocksdb_bytes(tables[1:])
        assert only_rollup["rocksdb_memtables"] < filled["rocksdb_memtables"]
        assert rocksdb_bytes([SimpleNamespace(data=SimpleNamespace())]) == {}
    finally:
        for database in [*databases.values(), *rollup.values()]:
            database.close()


def test_resident_and_traced_python_memory() -> None:
    assert (resident_bytes() or 0) > 10 * 2**20
    assert resident_bytes(pid=2**31) is None  # no such process
    assert python_traced_bytes() is None
    tracemalloc.start()
    try:
        ballast = [bytes(1000) for _ in range(5000)]
        assert (python_traced_bytes() or 0) >= 5000 * 1000
        del ballast
    finally:
        tracemalloc.stop()


def test_clickhouse_memory_is_read_from_the_engine(
        loaded_clickhouse: LoadedClickHouse) -> None:
    # chdb opens one data directory per process: the shared loaded one.
    assert (clickhouse_bytes(loaded_clickhouse.client) or 0) > 0
