"""Logging: JSON lines with ISO time, level, event, gate_id and a bound txn_id."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import structlog

from egate.edge.service.logs import configure_logging


def test_json_lines_carry_the_contract_fields() -> None:
    stream = io.StringIO()
    configure_logging(gate_id="g7", fmt="json", stream=stream)
    log = structlog.get_logger("t")
    with structlog.contextvars.bound_contextvars(txn_id="0190-abc"):
        log.info("session_started", mode="exit")
    log.warning("no_txn")
    logging.getLogger("paho").warning("from stdlib")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = lines
    assert first["event"] == "session_started" and first["txn_id"] == "0190-abc"
    assert first["level"] == "info" and first["gate_id"] == "g7"
    datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert "txn_id" not in second and second["level"] == "warning"
    assert third["event"] == "from stdlib" and third["gate_id"] == "g7"


def test_level_filter_drops_debug() -> None:
    stream = io.StringIO()
    configure_logging(gate_id="g", fmt="json", level="info", stream=stream)
    structlog.get_logger().debug("hidden")
    assert stream.getvalue() == ""
