"""Structured logging (structlog): JSON lines in production, key=value for people at a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "info", json_lines: bool | None = None) -> None:
    """Route structlog to stderr. ``json_lines=None`` picks JSON unless stderr is a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # sys.stderr looked up per logger, not bound once: a stream replaced later
        # (a test runner's capture, a daemon's redirect) is never written after close.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
