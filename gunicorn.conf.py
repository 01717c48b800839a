"""gunicorn settings: `gunicorn -c gunicorn.conf.py wsgi:app`.

Sync workers (ARCHITECTURE.md: gthread with keep-alive pinned connections to one worker on two
cores). Everything can be overridden with GUNICORN_* / CODEXWEB_* environment variables.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 2
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
