"""Prometheus metrics (CONTRACT.md §8): `GET /metrics`, correct across gunicorn workers.

Under gunicorn each worker writes its samples to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR` (set up and cleaned by gunicorn.conf.py, which also marks dead
workers), and a scrape, answered by any one worker, adds up the files of all of them. Without
that variable (`flask run`, tests in one process) the process's own registry answers.

The endpoint exists only with `METRICS_ENABLED`, and answers only addresses in `METRICS_ALLOW`
(CIDRs; the address the app sees, i.e. after ProxyFix when `PROXY_FIX_COUNT` is set); anyone
else gets the same 404 as for a page that does not exist.

Per request: two label lookups, a counter increment and a histogram observation (memory
writes); active sessions are one indexed COUNT at scrape time, not a gauge kept up to date.
Other modules record what they see through the small functions at the bottom; they cost as
little when the endpoint is off, and a scrape is what makes them visible.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from .clock import utcnow
from .extensions import db, limiter

UNMATCHED_ROUTE = "<unmatched>"

HTTP_REQUESTS = Counter(
    "codexweb_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "codexweb_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TOKENS_MINTED = Counter(
    "codexweb_chatkit_tokens_minted_total", "ChatKit client tokens minted.", ["provider"]
)
RATE_LIMITED = Counter(
    "codexweb_rate_limited_total", "Requests refused with 429, by route template.", ["route"]
)
STREAMS_ACTIVE = Gauge(
    "codexweb_chatkit_streams_active",
    "Conversations streaming a reply right now.",
    multiprocess_mode="livesum",
)
MODEL_FIRST_TOKEN = Histogram(
    "codexweb_chatkit_model_first_token_seconds",
    "Time from a user message to the model's first token.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)
MODEL_FAILURES = Counter(
    "codexweb_chatkit_model_failures_total",
    "Replies that failed (model down, timed out or answering errors).",
    ["reason"],
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# Recording -------------------------------------------------------------------------------


def token_minted(provider: str) -> None:
    TOKENS_MINTED.labels(provider).inc()


def rate_limited() -> None:
    RATE_LIMITED.labels(_route()).inc()


def stream_started() -> None:
    """A conversation began streaming a reply; pair with `stream_finished()`."""
    STREAMS_ACTIVE.inc()


def stream_finished() -> None:
    STREAMS_ACTIVE.dec()


def model_first_token(seconds: float) -> None:
    MODEL_FIRST_TOKEN.observe(seconds)


def model_failed(reason: str = "error") -> None:
    """`reason`: a small fixed vocabulary (`timeout`, `unavailable`, `error`), never text."""
    MODEL_FAILURES.labels(reason).inc()


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    route = _route()
    HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
    return response


# Scraping --------------------------------------------------------------------------------


class ActiveSessionsCollector:
    """Codex sessions active now: counted at scrape time from the database (one indexed
    COUNT), so it is right across workers and hosts without any bookkeeping per request."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .models import CodexSession

        count = db.session.scalar(
            select(func.count())
            .select_from(CodexSession)
            .where(CodexSession.status == "active", CodexSession.expires_at > utcnow())
        )
        gauge = GaugeMetricFamily("codexweb_codex_sessions_active", "Codex sessions active now.")
        gauge.add_metric([], count or 0)
        yield gauge


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@limiter.exempt
def metrics() -> Response:
    if not _allowed(request.remote_addr):
        abort(404)
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(ActiveSessionsCollector())
    body = generate_latest(registry) + generate_latest(scraped)
    response = Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0])
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


def _allowed(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in current_app.extensions["codexweb.metrics_allow"])


def init_app(app: Flask) -> None:
    """With METRICS_ENABLED: time every request and serve /metrics to METRICS_ALLOW."""
    if not app.config["METRICS_ENABLED"]:
        return
    app.extensions["codexweb.metrics_allow"] = [
        ipaddress.ip_network(cidr, strict=False) for cidr in app.config["METRICS_ALLOW"]
    ]
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
