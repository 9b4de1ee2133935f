"""The worker logs at its configured level: nothing below it is even formatted."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from streams.app.worker import faust_worker


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", ["warning", "error"])
def test_a_worker_at_warning_or_above_builds_no_debug_records(
        restored_logging: None, level: str) -> None:
    # Faust's terminal spinner set the root logger to DEBUG at these levels, so every
    # aiokafka debug call built a record per message sent.
    app = faust.App("logging-test", broker="kafka://localhost:1", web_enabled=False)
    worker = faust_worker(app, level)
    worker._setup_logging()  # what the worker does first when it starts
    for name in ("aiokafka", "aiokafka.conn", "faust", "streams"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    assert logging.getLogger("aiokafka").isEnabledFor(getattr(logging, level.upper()))


def test_a_worker_at_debug_still_logs_debug(restored_logging: None) -> None:
    app = faust.App("logging-test", broker="kafka://localhost:1", web_enabled=False)
    faust_worker(app, "debug")._setup_logging()
    assert logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
