"""Every error the application answers with, rendered in one place.

Views and domain code raise `Problem(status, code, detail)`; this module decides how the
client sees it:

- JSON clients (`/api/…`, `/.well-known/…`, or asking for JSON): RFC 9457 problem+json;
- HTMX requests: the status, plus an `HX-Trigger` toast (or `HX-Redirect` to the login page
  when authentication is missing, so the login page is never swapped into a panel);
- browsers: an HTML error page, or a redirect to the login page for a missing login.

No trace, SQL or driver text ever reaches a client; a 500 carries the request id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from limits.errors import StorageError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from . import metrics
from .auth.redaction import redact_token_paths
from .extensions import db, limiter
from .logging import REQUEST_ID_ENVIRON, current_request_id, emit
from .ratelimit import rate_limit_message, retry_after_seconds
from .ratelimit_storage import storage_failed

PROBLEM_TYPE_BASE = "https://codexweb.dev/problems/"

TITLES = {
    "authentication_required": "Authentication required",
    "invalid_credentials": "Invalid email or password",
    "account_disabled": "Account disabled",
    "email_not_verified": "Email address not verified",
    "email_taken": "Email address already registered",
    "token_expired": "Token expired",
    "token_invalid": "Token invalid",
    "invalid_request": "Invalid request",
    "session_not_found": "Session not found",
    "session_exists": "An active session already exists",
    "rate_limited": "Too many requests",
    "csrf_failed": "CSRF check failed",
    "unavailable": "Service unavailable",
    "upstream_error": "The ChatKit service refused the request",
    "upstream_unavailable": "The ChatKit service is unavailable",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "payload_too_large": "Request body too large",
    "bad_request": "Bad request",
    "internal_error": "Internal server error",
}

_CODE_FOR_STATUS = {
    400: "bad_request",
    401: "authentication_required",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    503: "unavailable",
}


class Problem(Exception):
    """An error with a stable code (CONTRACT.md §5), raised anywhere, rendered here."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.detail = detail or TITLES.get(code, code)
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": TITLES.get(self.code, self.code.replace("_", " ").capitalize()),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


def invalid_request(
    errors: list[dict[str, str]], detail: str = "The request is not valid."
) -> Problem:
    """422 with per-field messages: `errors: [{"field", "message"}]`."""
    return Problem(422, "invalid_request", detail, errors=errors)


# Machine endpoints outside /api/: always problem+json, whatever the client accepts.
JSON_PATHS = frozenset({"/healthz", "/chatkit"})


def wants_json() -> bool:
    """One decision for the whole app: does this client get problem+json?"""
    if request.path.startswith(("/api/", "/.well-known/")) or request.path in JSON_PATHS:
        return True
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def toast_trigger(message: str, level: str = "error") -> str:
    """The `HX-Trigger` value that makes static/app.js show a toast."""
    return json.dumps({"codexweb:toast": {"message": message, "level": level}})


def login_url_for_current_page() -> str:
    """`/login?next=<the page the user was on>`, local paths only."""
    target = request.headers.get("HX-Current-URL") if is_htmx() else request.full_path
    parts = urlsplit(target or "/")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return url_for("auth_views.login", next=path)


def render_problem(problem: Problem) -> Response:
    if problem.status >= 500 and problem.code == "internal_error":
        problem.extra.setdefault("request_id", current_request_id())
    if wants_json() and not is_htmx():
        response = jsonify(problem.body())
        response.status_code = problem.status
        response.mimetype = "application/problem+json"
    elif is_htmx():
        response = _render_htmx(problem)
    else:
        response = _render_page(problem)
    response.headers.update(problem.headers)
    return response


def _render_htmx(problem: Problem) -> Response:
    if problem.code == "authentication_required":
        # 200 so htmx follows the redirect header without treating it as an error.
        response = Response("", status=200)
        response.headers["HX-Redirect"] = login_url_for_current_page()
        return response
    response = Response(problem.detail, status=problem.status, mimetype="text/plain")
    response.headers["HX-Trigger"] = toast_trigger(problem.detail)
    return response


def _render_page(problem: Problem) -> Response:
    if problem.code == "authentication_required":
        return redirect(login_url_for_current_page())
    html = render_template("errors/error.html", problem=problem.body())
    return Response(html, status=problem.status, mimetype="text/html")


def rate_limited_problem(scope: object = None) -> Problem:
    """429 `rate_limited`, worded for the limit's `scope` (ratelimit.rate_limit_message)."""
    retry_after = retry_after_seconds(limiter)
    return Problem(
        429,
        "rate_limited",
        rate_limit_message(scope, retry_after),
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def _handle_problem(problem: Problem) -> Response:
    return render_problem(problem)


def rate_limit_refusal(error: RateLimitExceeded) -> Problem:
    """The 429 problem for a breached limit, logged as `http.rate_limited`. Pages that keep
    their form on a 429 render it themselves (auth.views); everyone else gets it rendered."""
    problem = rate_limited_problem(error.limit.scope)
    metrics.rate_limited()
    emit(
        "http.rate_limited",
        logging.WARNING,
        path=request.path,
        limit=str(error.limit.limit),
        retry_after=problem.extra["retry_after"],
    )
    return problem


def _handle_rate_limit(error: RateLimitExceeded) -> Response:
    return render_problem(rate_limit_refusal(error))


def _handle_csrf(error: CSRFError) -> Response:
    return render_problem(
        Problem(
            403,
            "csrf_failed",
            "The form expired or the CSRF token is missing; reload and try again.",
        )
    )


def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = _CODE_FOR_STATUS.get(status, "bad_request" if status < 500 else "internal_error")
    headers = {}
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    detail = error.description if status not in (404, 405) else TITLES[code] + "."
    return render_problem(Problem(status, code, detail, headers=headers))


def service_unavailable() -> Problem:
    """503 `unavailable`: a dependency is out of reach; no driver text for the client."""
    return Problem(503, "unavailable", "The service is temporarily unavailable; try again shortly.")


def is_database_unavailable(error: Exception) -> bool:
    """Is this the database being out of reach (not a bug in our SQL)?

    Operational and interface errors (refused, reset, closed connections), a connection the
    pool found dead mid-statement, and a pool with no connection to hand out in time.
    """
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def _handle_database_error(error: DBAPIError | PoolTimeout) -> Response:
    if isinstance(error, DataError):
        return _handle_unstorable_value(error)
    if not is_database_unavailable(error):
        return _handle_unexpected(error)
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()  # the connection may be gone; the session must be reusable
    orig = getattr(error, "orig", None)
    emit("db.unavailable", logging.ERROR, error=type(orig or error).__name__)
    return render_problem(service_unavailable())


def _handle_unstorable_value(error: DataError) -> Response:
    # A value that passed validation but that the database refuses: a NUL character or an
    # over-long string on PostgreSQL (SQLite stores both). The client's input, not our bug:
    # a 422 like any other refused input (JSON bodies name the field before this point).
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    emit("db.value_refused", logging.WARNING, error=type(error.orig or error).__name__)
    return render_problem(
        invalid_request(
            [{"field": "body", "message": "Contains a value that cannot be stored."}],
            "The request contains a value that cannot be stored.",
        )
    )


def _handle_rate_limit_storage_unavailable(error: StorageError) -> Response:
    # Only reached with RATELIMIT_FAIL_OPEN=False: the limits cannot be checked, so refuse.
    storage_failed(error)
    return render_problem(service_unavailable())


def _handle_unexpected(error: Exception) -> Response:
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()
    _log_unexpected(error)
    return render_problem(
        Problem(500, "internal_error", "Something went wrong on our side; it has been logged.")
    )


def _log_unexpected(error: Exception) -> None:
    logger = logging.getLogger("codexweb.errors")
    if not isinstance(error, DBAPIError):
        logger.exception("unhandled exception on %s", request.path)
        return
    # A driver's message can quote row values (PostgreSQL: "Key (email)=(…) already exists"),
    # and bound parameters are hidden already: log the error class, the SQL and where it came
    # from, not the message.
    where = "".join(traceback.format_tb(error.__traceback__))
    logger.error(
        "unhandled database error on %s: %s\n[SQL: %s]\n%s",
        request.path,
        type(error.orig or error).__name__,
        error.statement,
        where,
    )


def _no_write(data: bytes) -> None:
    raise RuntimeError("codexweb answers with response iterables, never start_response's write")


class FaultBarrier:
    """The last line: an exception that escapes Flask's own handling still answers through
    this module's rendering, with the request's `X-Request-ID`.

    Flask's error handlers cover the view and the before/after hooks, not the teardown: when
    the database connection is cut mid-request, the session's rollback at the request's end
    raises after the response was made, and gunicorn answered its own bare `500 text/html`
    and logged the path with its token (issue 12, finding 4). So the app's start_response is
    held back until the app has returned: a failure before that replaces the answer whole.
    """

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started: list[tuple] = []

        def hold(status, headers, exc_info=None):
            started.append((status, headers, exc_info))
            return _no_write

        try:
            body = self.wsgi_app(environ, hold)
        except Exception as error:
            return self._render(environ, error)(environ, start_response)
        start_response(*started[-1])
        return body

    def _render(self, environ, error: Exception) -> Response:
        request_id = environ.get(REQUEST_ID_ENVIRON) or uuid.uuid4().hex
        context = self.app.request_context(environ)
        context.push()
        try:
            g.request_id = request_id
            emit(
                "http.fault_outside_handlers",
                logging.ERROR,
                error=type(getattr(error, "orig", None) or error).__name__,
                method=environ.get("REQUEST_METHOD"),
                path=redact_token_paths(environ.get("PATH_INFO", "")),
            )
            if is_database_unavailable(error):
                problem = service_unavailable()
            else:
                problem = Problem(
                    500, "internal_error", "Something went wrong on our side; it has been logged."
                )
            response = render_problem(problem)
        finally:
            # This context's own teardown meets the same dead connection: let it fail quietly.
            with contextlib.suppress(Exception):
                context.pop()
        response.headers["X-Request-ID"] = request_id
        response.headers["Cache-Control"] = "no-store"
        return response


def init_app(app: Flask) -> None:
    app.wsgi_app = FaultBarrier(app, app.wsgi_app)  # type: ignore[method-assign]
    app.register_error_handler(Problem, _handle_problem)
    app.register_error_handler(RateLimitExceeded, _handle_rate_limit)
    app.register_error_handler(CSRFError, _handle_csrf)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(DBAPIError, _handle_database_error)
    app.register_error_handler(PoolTimeout, _handle_database_error)
    app.register_error_handler(StorageError, _handle_rate_limit_storage_unavailable)
    app.register_error_handler(Exception, _handle_unexpected)
