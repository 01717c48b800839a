"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app`.

Sync workers (ARCHITECTURE.md: gthread with keep-alive pinned connections to one worker on two
cores). Everything can be overridden with GUNICORN_* / CODEXWEB_* environment variables.
"""

import multiprocessing
import os

from gunicorn.glogging import Logger

from codexweb.auth.redaction import redact_token_paths

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 2
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"


class RedactingLogger(Logger):
    """The access log without the tokens of emailed links (verify, reset) in request paths."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "f", "{referer}i"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_token_paths(atoms[key])
        return atoms


logger_class = RedactingLogger
