"""structlog setup: JSON lines on stdout for journald, a readable console on a terminal.

Every line carries an ISO timestamp, level, event and `gate_id`; session code binds `txn_id`
with `structlog.contextvars.bound_contextvars(txn_id=...)`. Personal data is redacted by the document
model's own rule (egate.drivers.document.redact) before a line is rendered.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from egate.drivers.document.redact import redact_event

LogFormat = Literal["auto", "json", "console"]


# Names of the logging levels egate accepts (logging.getLevelNamesMapping exists only from Python 3.11).
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure_logging(
    *, gate_id: str = "-", level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib logging from libraries through it)."""
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_gate_id(gate_id),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        # Last before rendering: reader results become their allowlisted view, personal keys are masked.
        redact_event,
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    numeric = _LEVELS[level.lower()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (paho, onnxruntime wrappers) log through stdlib logging: render them the same way.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))


def _add_gate_id(gate_id: str) -> structlog.types.Processor:
    def processor(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        event.setdefault("gate_id", gate_id)
        return event

    return processor
