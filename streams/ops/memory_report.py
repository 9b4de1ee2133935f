"""Where a worker's memory is: the figures behind the ``tokenyield_memory_bytes`` gauge.

Resident size alone cannot tell state from RocksDB's memtables, the embedded ClickHouse
engine or Python objects; the soak (loadtest/soak.py) charts these side by side. Every
figure is best effort: a holder that cannot be read is left out, and reading memory
never fails a scrape of /metrics.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROCKSDB_PROPERTIES = {
    "rocksdb_memtables": "rocksdb.cur-size-all-mem-tables",
    "rocksdb_block_cache": "rocksdb.block-cache-usage",
    "rocksdb_table_readers": "rocksdb.estimate-table-readers-mem",
}
CLICKHOUSE_MEMORY_SQL = "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"


def resident_bytes(pid: int | str = "self") -> int | None:
    """VmRSS of a process (Linux); None where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rocksdb_bytes(tables: Iterable[Any]) -> dict[str, int]:
    """Memtables, block cache and table readers summed over every RocksDB the Faust tables
    opened (one per table partition). Empty for the memory store. Reads Faust's
    ``Store._dbs`` (rocksdict ``Rdict`` objects): a Faust upgrade that renames it makes
    these figures disappear, not the scrape fail."""
    totals = dict.fromkeys(ROCKSDB_PROPERTIES, 0)
    found = False
    for table in tables:
        databases = getattr(getattr(table, "data", None), "_dbs", None)
        if not isinstance(databases, dict):
            continue
        for database in databases.values():
            for holder, name in ROCKSDB_PROPERTIES.items():
                try:
                    value = database.property_int_value(name)
                except Exception:  # closed during a rebalance, or another driver
                    continue
                found = True
                totals[holder] += int(value or 0)
    return totals if found else {}


def clickhouse_bytes(client: Any) -> int | None:
    """Memory the ClickHouse engine tracks. Only meaningful for embedded chdb, which runs
    inside the worker; a server's figure is the server's, not the worker's."""
    rows = client.query(CLICKHOUSE_MEMORY_SQL).result_rows
    return int(rows[0][0]) if rows else None


def python_traced_bytes() -> int | None:
    """Python allocations, when tracemalloc runs (``PYTHONTRACEMALLOC=1``: slow, for
    diagnosis only)."""
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
