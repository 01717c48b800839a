"""Structured events and request ids.

`emit("codex.session.created", user_id=..., ...)` writes one JSON object per line on stderr:
`{"ts", "level", "event", "request_id", ...fields}`. Field names that could carry a secret are
redacted here, whatever the caller passes, so a token can never reach a log line by mistake.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from typing import Any

from flask import Flask, g, has_request_context, request

from .auth.redaction import redact_token_paths
from .clock import utcnow

EVENTS_LOGGER = "codexweb.events"
events_logger = logging.getLogger(EVENTS_LOGGER)

# Any field whose name contains one of these words is replaced by "[redacted]".
_SECRET_WORDS = ("password", "token", "secret", "authorization", "cookie", "link", "key")
# Fields that contain a secret word in their name but hold no secret.
_SAFE_FIELDS = frozenset({"jti", "kid", "token_type", "tokens_issued", "first_token_ms"})
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event (CONTRACT.md §7)."""
    events_logger.log(level, event, extra={"event_fields": redact(fields)})


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields with secrets masked: by name (`_SECRET_WORDS`), and emailed tokens inside any
    text (a `path` that is `/reset-password/<token>`), whichever field carries them."""
    return {name: _redacted(name, value) for name, value in fields.items()}


def _redacted(name: str, value: Any) -> Any:
    if _is_secret_field(name):
        return "[redacted]"
    if isinstance(value, str) and "/" in value:
        return redact_token_paths(value)
    return value


def _is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _SAFE_FIELDS and any(word in lowered for word in _SECRET_WORDS)


def current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is one field, and emailed tokens in paths
    (`/reset-password/<token>`) are masked wherever a message or traceback quotes them."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "event_fields", None)
        entry: dict[str, Any] = {
            "ts": utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": record.getMessage() if fields is not None else "log",
            "request_id": getattr(record, "request_id", None),
        }
        if fields is not None:
            entry.update(fields)
        else:
            entry["logger"] = record.name
            entry["message"] = redact_token_paths(record.getMessage())
        if record.exc_info:
            entry["exception"] = redact_token_paths(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "event_fields", {}) or {}
        extras = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{record.levelname:<7} [{getattr(record, 'request_id', None) or '-'}] "
        line += f"{record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_token_paths(line)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class NotOurs(logging.Filter):
    """Records of codexweb's own loggers: they have their handler, at LOG_LEVEL."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "codexweb" or record.name.startswith("codexweb."))


def init_app(app: Flask) -> None:
    """codexweb's events and log lines at LOG_LEVEL, and every library's warnings and errors,
    one line each on stderr in the same format.

    Without the second handler a library's warning (SQLAlchemy's pool finding a connection the
    database ended, asyncio's "Task exception was never retrieved", an SDK's notice) would
    reach Python's last-resort handler: a bare text line, or a multi-line traceback, in the
    middle of a JSON log. It sits on the root logger at WARNING, below which libraries stay
    quiet whatever level they set themselves.
    """
    formatter = TextFormatter() if app.config["LOG_FORMAT"] == "text" else JsonFormatter()
    _install(logging.getLogger("codexweb"), _handler(formatter))
    _install(logging.getLogger(), _handler(formatter, logging.WARNING, NotOurs()))
    logging.getLogger("codexweb").setLevel(app.config["LOG_LEVEL"])

    app.before_request(_assign_request_id)
    app.after_request(_send_request_id)


# The request id also rides in the WSGI environ, where the fault barrier
# (`errors.FaultBarrier`) finds it after the request context is gone.
REQUEST_ID_ENVIRON = "codexweb.request_id"


def _assign_request_id() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
    request.environ[REQUEST_ID_ENVIRON] = g.request_id


def _handler(
    formatter: logging.Formatter, level: int = logging.NOTSET, *filters: logging.Filter
) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(level)
    # The given filters first: a record they drop (codexweb's own, at the root) costs no
    # request-id lookup on its second handler.
    for each in (*filters, RequestIdFilter()):
        handler.addFilter(each)
    return handler


def _install(logger: logging.Logger, handler: logging.Handler) -> None:
    """One handler of ours per logger: replaced, not stacked, when tests build many apps."""
    for old in [each for each in logger.handlers if getattr(each, "_codexweb", False)]:
        logger.removeHandler(old)
    handler._codexweb = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def _send_request_id(response):
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    return response
