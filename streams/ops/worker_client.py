"""A client of a running worker's web endpoints, for the command line and the demo
(``tokenyield sql`` answers through the worker when it owns the embedded chdb path)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from schemas.errors import ConfigurationError


def worker_sql(web_port: int, sql: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run a read-only query through a running worker's /sql/ endpoint."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/sql/", data=json.dumps({"sql": sql}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise ConfigurationError(f"query failed: {body.get('error', exc)}") from exc
