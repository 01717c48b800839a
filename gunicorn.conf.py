"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py wsgi:app`.

- Threaded workers (`gthread`): a ChatKit conversation (`/chatkit`) streams for seconds, and
  holds one thread while it does, never a whole worker, so pages and the API keep answering
  while conversations stream (CONTRACT §1: 16 streams at once on the default 2 workers).
  `GUNICORN_WORKERS` (or `WEB_CONCURRENCY`, default 2) processes × `GUNICORN_THREADS`
  (default 24) threads each; docs/PERFORMANCE.md has the measurements behind the choice
  (sync workers spend less CPU on short requests, and cannot serve a third stream). Of those
  threads, at most `CODEXWEB_REQUEST_CONCURRENCY` (default 4) run the app at once, the rest
  wait their turn: 24 short requests at once spent their CPU waiting on each other
  (codexweb/concurrency.py; streams do not count). Several
  workers need `CODEXWEB_RATELIMIT_STORAGE_URI=redis://…`, or every limit counts once per
  worker.
- Timeouts: a request that runs longer than `GUNICORN_TIMEOUT` gets its worker killed and
  replaced; SIGTERM (systemd stop) and SIGHUP (reload) let running requests finish for up to
  `GUNICORN_GRACEFUL_TIMEOUT` seconds.
- Logs: one JSON object per line, like the application's events, gunicorn's own error log
  included (a traceback is one field, never many lines). The access log carries the path
  without its query string, and paths that carry a token are redacted in every line, so no
  reset or verification link, nor anything a client put in a query string, reaches the logs.
  Worker starts, exits, timeouts and reloads are logged as `gunicorn.*` events.
- The app is not preloaded: each worker opens its own database connections after the fork.
- Behind a reverse proxy, set `CODEXWEB_PROXY_FIX_COUNT` (see docs/DEPLOY.md); gunicorn
  itself trusts forwarded headers only from `GUNICORN_FORWARDED_ALLOW_IPS` (127.0.0.1).
- Metrics (codexweb/metrics.py): workers write their samples to `PROMETHEUS_MULTIPROC_DIR`
  (a fresh temporary folder unless set), emptied when the master starts so no earlier run's
  counts carry over; `child_exit` marks a dead worker's live gauges gone.
"""

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gunicorn.glogging import Logger

# Before anything imports prometheus_client: it picks its multiprocess mode at import time.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="codexweb-metrics-")

from prometheus_client import multiprocess  # noqa: E402

from codexweb.auth.redaction import redact_token_paths  # noqa: E402


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def default_workers() -> int:
    # Threads, not processes, carry the concurrency: two processes keep one worker serving
    # while the other restarts, and use both cores of the small machines we target.
    return 2


bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = _env_int("GUNICORN_WORKERS", _env_int("WEB_CONCURRENCY", default_workers()))
# `GUNICORN_WORKER_CLASS=sync` only to measure against (docs/PERFORMANCE.md): sync workers
# serve one request each, so two open conversations would hold up every page.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
# One thread unless asked: gunicorn silently runs `sync` with more than one thread as gthread.
threads = _env_int("GUNICORN_THREADS", 1 if worker_class == "sync" else 24)
# The app sizes its database pool by it, one connection per thread, so a busy worker never
# opens and closes connections per request; an explicit DATABASE_POOL_SIZE wins, wherever it
# is set (codexweb/config.py).
os.environ["CODEXWEB_WORKER_THREADS"] = str(threads)
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _env_int("GUNICORN_KEEPALIVE", 2)
# Recycle workers now and then (0: never); jitter keeps them from restarting all at once.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 0)
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = os.environ.get("GUNICORN_ERRORLOG", "-")
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
preload_app = False
proc_name = "codexweb"


def access_path(path: str) -> str:
    """The path as logged: never a query string (PATH_INFO has none), never a link's token."""
    return redact_token_paths(path or "")


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class JsonErrorFormatter(logging.Formatter):
    """gunicorn's error log (`Error handling request /reset-password/…`, worker notices) as
    one redacted JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(),
            "level": record.levelname.lower(),
            "event": "gunicorn.log",
            "message": redact_token_paths(record.getMessage()),
            "worker_pid": os.getpid(),
        }
        if record.exc_info:
            entry["exception"] = redact_token_paths(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class JsonAccessLogger(Logger):
    """gunicorn's logger with one JSON object per access-log and error-log line."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonErrorFormatter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict((name.lower(), value) for name, value in resp.headers)
        entry = {
            "ts": _timestamp(),
            "level": "info",
            "event": "http.access",
            "request_id": headers.get("x-request-id"),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": access_path(environ.get("PATH_INFO", "")),
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "worker_pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(entry))
        except Exception:
            self.exception("access log failed")


logger_class = JsonAccessLogger


def _lifecycle(event: str, level: str = "info", **fields) -> None:
    entry = {"ts": _timestamp(), "level": level, "event": event, **fields}
    sys.stderr.write(json.dumps(entry) + "\n")
    sys.stderr.flush()


def when_ready(server) -> None:
    _lifecycle("gunicorn.ready", pid=os.getpid(), workers=server.num_workers, bind=bind)


def post_fork(server, worker) -> None:
    _lifecycle("gunicorn.worker.started", worker_pid=worker.pid)


# The ChatKit runtime's SDKs cost about 1.5 s of CPU to import. The master imports them once,
# before it forks, so every worker (a restarted one too) starts with them loaded and never
# spends its first seconds importing while it serves: that import used to compete with the
# first requests of each worker for the GIL. Only third-party packages are imported here, so
# a reload (SIGHUP) after deploying new codexweb code still loads that code in the workers;
# upgrading these packages needs a restart, as for Flask or SQLAlchemy.
RUNTIME_SDKS = ("openai", "agents", "chatkit.server", "chatkit.agents", "chatkit.types")


def on_starting(server) -> None:
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    for module in RUNTIME_SDKS:
        importlib.import_module(module)


def post_worker_init(worker) -> None:
    # Before the worker takes its first request, so that request does not wait for them: our
    # runtime module (its request schema is built at import, ~0.5 s) and SQLAlchemy's mapper
    # configuration (~0.2 s, otherwise done by the first query).
    importlib.import_module("codexweb.runtime.server")
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def worker_int(worker) -> None:
    _lifecycle("gunicorn.worker.interrupted", "warning", worker_pid=worker.pid)


def worker_abort(worker) -> None:
    # SIGABRT: the master killed a worker that ran past `timeout`.
    _lifecycle("gunicorn.worker.timeout", "error", worker_pid=worker.pid, timeout=timeout)


def worker_exit(server, worker) -> None:
    _lifecycle("gunicorn.worker.exited", worker_pid=worker.pid)


def child_exit(server, worker) -> None:
    # Seen by the master for every worker that went away, including a killed one.
    _lifecycle("gunicorn.worker.gone", worker_pid=worker.pid)
    multiprocess.mark_process_dead(worker.pid)


def on_reload(server) -> None:
    _lifecycle("gunicorn.reloading", pid=os.getpid())


def on_exit(server) -> None:
    _lifecycle("gunicorn.stopped", pid=os.getpid())
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
