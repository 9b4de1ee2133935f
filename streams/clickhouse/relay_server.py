"""The writer's side of the relay: a listener of its own, beside the worker's event loop.

The group's other workers send every insert of their checkpoints here
(``streams.clickhouse.relay``). Served from Faust's web server, a request waited for the
writer's event loop twice (to be read, and to be answered), and that loop is busy
running the writer's own engine between awaits; then it queued on the sink thread
behind the writer's own inserts. The relaying worker, whose checkpoint cannot finish
before its insert has, spent more time waiting than working (about 40 % of its wall
time in the 2026-12-01 profile, docs/BENCHMARKS.md). Here each request is handled on a
thread of a ``ThreadingHTTPServer``: it runs the insert on the writer's ClickHouse
client at once, serialised with the writer's own use of it by the sink's lock (chdb is
not thread-safe), and answers.

Nothing about the guarantees changes: the answer comes after the insert has returned,
an error is returned as an error (a storage failure flagged as one, so the sender
retries it; a fault of ours stops the sender), and nothing is read before the group's
token matches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streams.clickhouse import relay
from streams.clickhouse.sink import is_storage_failure

log = logging.getLogger(__name__)

Run = Callable[[dict[str, Any]], Any]  # one relayed request -> its result


class RelayServer:
    """Serves ``POST /clickhouse/relay/`` on ``host:port`` (0: a free port) until stopped."""

    def __init__(self, token: str, run: Run, host: str = "127.0.0.1", port: int = 0) -> None:
        if not token:
            raise ValueError("a relay needs the group's token")
        handler = _handler(token, run)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="clickhouse-relay", daemon=True)

    def start(self) -> RelayServer:
        self._thread.start()
        log.info("ClickHouse relay for the group's workers on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(token: str, run: Run) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a worker reuses its connection

        def do_POST(self) -> None:  # http.server calls it by this name
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.rstrip("/") != relay.RELAY_PATH.rstrip("/"):
                self._drain(length)
                self._answer(404, {"error": {"type": "NotFound", "message": self.path}})
                return
            if not relay.authorized(self.headers.get("Authorization"), token):
                self._drain(length)
                self._answer(403, {"error": {"type": "Forbidden",
                                             "message": "no relay token"}})
                return
            if length > relay.MAX_REQUEST_BYTES:
                self.close_connection = True
                self._answer(413, {"error": {"type": "TooLarge",
                                             "message": f"{length} bytes"}})
                return
            try:
                answer: dict[str, Any] = {"ok": run(relay.unpack(self.rfile.read(length)))}
            except Exception as exc:  # every error goes back to the sender, as data
                self._answer(500, {"error": {"type": type(exc).__name__,
                                             "message": str(exc)[:2000],
                                             "storage": is_storage_failure(exc)}})
                return
            self._answer(200, answer)

        def _drain(self, length: int) -> None:
            if 0 < length <= relay.MAX_REQUEST_BYTES:
                self.rfile.read(length)
            else:
                self.close_connection = True

        def _answer(self, status: int, value: Any) -> None:
            data = relay.pack(value)
            self.send_response(status)
            self.send_header("Content-Type", "application/msgpack")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # requests are not worth a log line each; errors are answered

    return Handler
