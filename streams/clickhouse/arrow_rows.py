"""Insert bodies built as Arrow columns, without clickhouse-connect's conversion per cell.

clickhouse-connect converts every cell of a ``Decimal`` column in Python
(``int(Decimal(str(x)) * 10**scale)``) before writing Native blocks; attributions carry
a dozen such columns, and that was the costliest part of the sink. Here each column is
one list handed to pyarrow (C): money goes in as ``decimal128`` words built from integers
already scaled (a ClickHouse ``Decimal(38, 18)`` *is* that integer: no rounding, no
text), straight from the engine's atto amounts where a record keeps them
(``ATTO_COLUMNS``), and times as epoch milliseconds truncated exactly as
clickhouse-connect truncates them. The body is an Arrow IPC stream, inserted with
``raw_insert(..., fmt="ArrowStream")``: one path for chdb and for a server.

The columns are the sink's own specs (``sink.CALL_COLUMNS``...), typed by the table as
ClickHouse describes it, so a column added to a table and to its spec needs nothing
here; a type this module does not build sends the table back to clickhouse-connect.
``tests/test_arrow_rows.py`` inserts the same rows both ways and compares every stored
value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Context, Decimal
from operator import attrgetter
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.exceptions import DataError

Spec = list[tuple[str, Callable[[Any], Any]]]
_CONTEXT = Context(prec=80)  # 10^9 with 18 places, scaled, is 28 digits; room to spare
_DECIMAL = re.compile(r"Decimal\((\d+),\s*(\d+)\)")
_INTEGERS = {"UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(),
             "UInt64": pa.uint64(), "Int8": pa.int8(), "Int16": pa.int16(),
             "Int32": pa.int32(), "Int64": pa.int64(), "Float32": pa.float32(),
             "Float64": pa.float64()}
_MS = pa.timestamp("ms", tz="UTC")
_DATE = pa.date32()
_US = pa.timestamp("us", tz="UTC")
_INT64 = pa.int64()
_WIDE = pa.decimal128(38, 0)  # any int64, unscaled

#: Money columns read from the engine's integers (atto) instead of the records' Decimals.
ATTO_COLUMNS: dict[str, dict[str, Callable[[Any], int | None]]] = {
    "model_calls": {"cost": attrgetter("cost_atto"),
                    "computed_cost": attrgetter("computed_atto")},
    "outcomes": {"value": attrgetter("value_atto"), "human_cost": attrgetter("human_atto"),
                 "value_at_risk": attrgetter("at_risk_atto")},
    # Rows of sink.unit_days: (PendingUnit, day, is_deleted).
    "work_units_by_day": {"model_cost": lambda row: row[0].cost_atto,
                          "fully_loaded_cost": lambda row: row[0].loaded_atto},
}


def decimals(values: Sequence[int | None], kind: pa.DataType) -> pa.Array:
    """A decimal128 column from integers already scaled: the two's-complement 128-bit
    little-endian words ClickHouse stores, built in C (an int64 array widened by a cast,
    its words then read at the column's scale)."""
    try:
        narrow = pa.array(values, _INT64)
    except (OverflowError, pa.ArrowInvalid):  # an amount past 64 bits (9.2 units in atto)
        valid = pa.array([v is not None for v in values], pa.bool_()).buffers()[1]
        words = b"".join((v or 0).to_bytes(16, "little", signed=True) for v in values)
        return pa.Array.from_buffers(kind, len(values),
                                     [valid if None in values else None, pa.py_buffer(words)])
    wide = narrow.cast(_WIDE)
    return pa.Array.from_buffers(kind, len(wide), wide.buffers(), null_count=wide.null_count)


def scaled(value: Decimal | int | None, scale: int) -> int | None:
    """A validated amount (at most ``scale`` places) as the integer ClickHouse stores."""
    if value is None:
        return None
    if isinstance(value, int):
        return value * 10 ** scale
    return int(value.scaleb(scale, context=_CONTEXT)) if value else 0


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, truncated (clickhouse-connect's DateTime64(3))."""
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _strip(kind: str) -> tuple[str, bool]:
    nullable = kind.startswith("Nullable(")
    if nullable:
        kind = kind[len("Nullable("):-1]
    if kind.startswith("LowCardinality("):
        kind = kind[len("LowCardinality("):-1]
    if kind.startswith("Nullable("):  # LowCardinality(Nullable(String))
        kind, nullable = kind[len("Nullable("):-1], True
    return kind, nullable


def _arrow_type(kind: str) -> pa.DataType | None:
    """The Arrow type of a ClickHouse column, or None for one this module does not build."""
    kind, _ = _strip(kind)
    if kind == "String":
        return pa.string()
    if kind in _INTEGERS:
        return _INTEGERS[kind]
    if (decimal := _DECIMAL.fullmatch(kind)) is not None:
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    if kind == "DateTime64(3, 'UTC')":
        return _MS
    if kind == "Date":
        return _DATE
    inner = None
    if kind.startswith("Array("):
        inner = _arrow_type(kind[len("Array("):-1])
        return None if inner is None else pa.list_(inner)
    if kind.startswith("Map(String,"):
        inner = _arrow_type(kind[len("Map(String,"):-1].strip())
        return None if inner is None else pa.map_(pa.string(), inner)
    return None


def _scaled_all(values: list[Any], scale: int) -> list[int | None]:
    try:  # the usual case, Decimals: one scaleb each (no text, no multiplication)
        return [None if v is None else int(v.scaleb(scale, _CONTEXT)) for v in values]
    except AttributeError:  # an int among them
        return [scaled(v, scale) for v in values]


def _values(rows: Sequence[Any], getter: Callable[[Any], Any]) -> list[Any]:
    """A column's values: a getter that is only attribute access (the sink's ``_Path``)
    runs as one C-level ``attrgetter`` over the rows, not a Python call per cell."""
    path = getattr(getter, "path", None)
    if path is not None:
        getter = attrgetter(".".join(path))
    return list(map(getter, rows))


def _column(values: list[Any], kind: pa.DataType, scaled_already: bool = False) -> pa.Array:
    if pa.types.is_decimal(kind):
        return decimals(values if scaled_already else _scaled_all(values, kind.scale), kind)
    if pa.types.is_timestamp(kind):
        # Python datetimes converted in C; the cast truncates to milliseconds as
        # clickhouse-connect does (epoch_ms), for every time after 1970.
        return pa.array(values, _US).cast(kind, safe=False)
    if pa.types.is_map(kind):
        offsets = [0]
        keys: list[str] = []
        items: list[Any] = []
        for mapping in values:
            if mapping:
                keys.extend(mapping)
                items.extend(mapping.values())
            offsets.append(len(keys))
        return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()),
                                       pa.array(keys, pa.string()),
                                       _column(items, kind.item_type))
    return pa.array(values, kind)


class ArrowBodies:
    """The Arrow bodies of the tables whose every spec'd column this module builds."""

    def __init__(self, describe: Callable[[str], dict[str, str]]) -> None:
        self._describe = describe  # table -> {column: ClickHouse type}
        self._types: dict[str, dict[str, pa.DataType] | None] = {}

    def types(self, table: str, spec: Spec) -> dict[str, pa.DataType] | None:
        if table not in self._types:
            described = self._describe(table)
            types = {name: _arrow_type(described.get(name, "")) for name, _ in spec}
            # A column of a type not built here: clickhouse-connect writes the table.
            self._types[table] = (None if any(t is None for t in types.values())
                                  else types)  # type: ignore[assignment]
        return self._types[table]

    def body(self, table: str, spec: Spec, rows: Sequence[Any]) -> tuple[list[str], bytes] | None:
        """``(column names, ArrowStream bytes)``, or None if the table is not built here."""
        types = self.types(table, spec)
        if types is None:
            return None
        atto = ATTO_COLUMNS.get(table, {})
        names, columns = [], []
        try:
            for name, getter in spec:
                fast = atto.get(name)
                values = _values(rows, fast or getter)
                names.append(name)
                columns.append(_column(values, types[name], fast is not None))
            table_data = pa.Table.from_arrays(columns, names=names)
            out = pa.BufferOutputStream()
            with pa.ipc.new_stream(out, table_data.schema) as writer:
                writer.write_table(table_data)
        except (pa.ArrowException, TypeError, ValueError, OverflowError,
                AttributeError) as exc:
            # A value our columns cannot hold is a fault of ours, reported as the driver
            # reports one (DataError: not retried, the worker stops).
            raise DataError(f"cannot build the {table} columns: {type(exc).__name__}: "
                            f"{exc}") from exc
        return names, out.getvalue().to_pybytes()
