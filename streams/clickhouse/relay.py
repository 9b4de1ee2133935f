"""One writer for a group of worker processes on the embedded chdb.

chdb opens a data directory in one process only, so ``tokenyield worker --processes N``
(``streams.app.processes``) gives the path to its first worker, the *writer*, and the
others reach ClickHouse through it: their DSN is ``relay://:TOKEN@127.0.0.1:PORT``, the
writer's relay listener (``streams.clickhouse.relay_server``, a thread of its own beside
the writer's event loop), and ``RelayClient`` sends each insert (an Arrow body as is, or
clickhouse-connect's column data) and each query there; the writer runs it on its own
client at once, one at a time with its own inserts. Everything else stays in each
process: consuming, decoding, the engine, the column building.

The guarantees do not change: a worker acknowledges its input only once the writer has
answered that the insert landed; a writer that is down or restarting is a storage
failure, retried like ClickHouse itself; an error of ours on the writer's side comes
back as one (``DataError``) and stops the sending worker, as it would locally.

Requests are msgpack with exact types (``Decimal``, times, big integers as text), and
carry the group's token (``TOKENYIELD_RELAY_TOKEN``, a random secret the supervisor
hands to its children): nothing is decoded before the token matches.
"""

from __future__ import annotations

import hmac
import urllib.error
import urllib.request
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import ormsgpack
from clickhouse_connect.driver.exceptions import DataError, OperationalError

RELAY_SCHEME = "relay://"
RELAY_PATH = "/clickhouse/relay/"
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # the relay listener's limit: a checkpoint's rows

_DECIMAL, _DATETIME, _DATE, _INT = 1, 2, 3, 4
_OPTIONS = ormsgpack.OPT_PASSTHROUGH_DATETIME | ormsgpack.OPT_PASSTHROUGH_BIG_INT


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return ormsgpack.Ext(_DECIMAL, str(value).encode())
    if isinstance(value, datetime):
        return ormsgpack.Ext(_DATETIME, value.isoformat().encode())
    if isinstance(value, date):
        return ormsgpack.Ext(_DATE, value.isoformat().encode())
    if isinstance(value, int):  # past 64 bits
        return ormsgpack.Ext(_INT, str(value).encode())
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot relay a {type(value).__name__}")


def _ext(code: int, data: bytes) -> Any:
    text = data.decode()
    if code == _DECIMAL:
        return Decimal(text)
    if code == _DATETIME:
        return datetime.fromisoformat(text)
    if code == _DATE:
        return date.fromisoformat(text)
    if code == _INT:
        return int(text)
    raise ValueError(f"unknown relay type {code}")


def pack(value: Any) -> bytes:
    return ormsgpack.packb(value, default=_default, option=_OPTIONS)


def unpack(data: bytes) -> Any:
    return ormsgpack.unpackb(data, ext_hook=_ext)


def authorized(header: str | None, token: str) -> bool:
    """The request carries the group's token (compared in constant time)."""
    expected = f"Bearer {token}"
    return bool(token) and header is not None and hmac.compare_digest(header, expected)


def execute(client: Any, request: dict[str, Any]) -> Any:
    """The writer's side: run one relayed request on its own client."""
    op = request.get("op")
    if op == "raw_insert":
        client.raw_insert(request["table"], request["columns"], request["body"],
                          settings=request.get("settings"), fmt=request.get("fmt"))
        return None
    if op == "insert":
        client.insert(request["table"], request["data"], column_names=request["columns"],
                      column_oriented=request.get("column_oriented", False),
                      settings=request.get("settings"))
        return None
    if op == "query":
        database = request.get("database")
        if database and client.database != database:
            client.database = database
        result = client.query(request["sql"], parameters=request.get("parameters"),
                              settings=request.get("settings"))
        return {"columns": list(result.column_names),
                "types": [t.name for t in result.column_types],
                "rows": [list(row) for row in result.result_rows]}
    raise DataError(f"the relay runs inserts and queries only, not {op!r}")


class _Type:
    def __init__(self, name: str) -> None:
        self.name = name


class RelayResult:
    """The parts of clickhouse-connect's ``QueryResult`` tokenyield reads."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.column_names = tuple(answer["columns"])
        self.column_types = tuple(_Type(name) for name in answer["types"])
        self.result_rows = [tuple(row) for row in answer["rows"]]


class RelayClient:
    """A ClickHouse client (the methods the sink and the web views use) that runs
    everything on the group's writer."""

    def __init__(self, dsn: str, timeout: float = 300.0) -> None:
        parsed = urlparse(dsn)
        self.url = f"http://{parsed.hostname}:{parsed.port}{RELAY_PATH}"
        self.token = parsed.password or ""
        self.timeout = timeout
        self.database = ""

    def _call(self, request: dict[str, Any]) -> Any:
        http = urllib.request.Request(
            self.url, data=pack(request), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/msgpack"})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as response:
                answer = unpack(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                answer = unpack(body)
            except (ValueError, TypeError):
                # Not the writer's answer (a proxy, the writer starting): try again.
                raise OperationalError(f"the writer answered HTTP {exc.code}") from exc
        except OSError as exc:  # refused, reset, timed out: the writer is down or busy
            raise OperationalError(f"the writer at {self.url} is unreachable: {exc}") from exc
        if not isinstance(answer, dict):
            raise OperationalError("the writer's answer is not a relay answer")
        error = answer.get("error")
        if error is not None:
            message = f"on the writer: {error.get('type')}: {error.get('message')}"
            if error.get("storage"):
                raise OperationalError(message)  # retried, as a ClickHouse failure
            raise DataError(message)  # a fault of ours: the sink stops the worker
        return answer.get("ok")

    def raw_insert(self, table: str, column_names: list[str] | None = None,
                   insert_block: bytes | None = None, settings: dict[str, Any] | None = None,
                   fmt: str | None = None) -> None:
        self._call({"op": "raw_insert", "table": table, "columns": column_names,
                    "body": insert_block, "settings": settings, "fmt": fmt})

    def insert(self, table: str, data: Any, column_names: list[str] | None = None,
               column_oriented: bool = False, settings: dict[str, Any] | None = None) -> None:
        self._call({"op": "insert", "table": table, "data": data, "columns": column_names,
                    "column_oriented": column_oriented, "settings": settings})

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> RelayResult:
        return RelayResult(self._call({"op": "query", "sql": sql, "parameters": parameters,
                                       "settings": settings, "database": self.database}))

    def close(self) -> None:
        return None
