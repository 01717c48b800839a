"""Configuration: defaults, then `instance/config.py`, then `CODEXWEB_*` environment variables.

Every key of CONTRACT.md §2 has its default here, in one place. Keys that other settings are
derived from (the database URL, the mail backend, cookie security) are resolved at the end of
`load_config`, so the rest of the application reads plain Flask config.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

ENV_PREFIX = "CODEXWEB"

DEFAULT_AGENTS = {
    "agent_123": {
        # No "placements": the demo agent is offered in every configured placement.
        "name": "Demo agent",
    }
}


def defaults(instance_path: str) -> dict[str, Any]:
    """The built-in configuration: serves one machine with zero set-up."""
    return {
        "ENV": "development",
        "SECRET_KEY": None,
        "DATABASE_URL": f"sqlite:///{Path(instance_path) / 'codexweb.db'}",
        # SQLite: how long a writer waits for the file lock before "database is locked".
        "SQLITE_BUSY_TIMEOUT_MS": 15000,
        # SQLite (WAL): NORMAL survives app and OS crashes, a power loss may lose the last
        # commits; FULL fsyncs every commit (codexweb/database.py). OFF, NORMAL, FULL or EXTRA.
        "SQLITE_SYNCHRONOUS": "NORMAL",
        # PostgreSQL: seconds to wait for a connection before answering 503.
        "DATABASE_CONNECT_TIMEOUT": 5,
        # Connections each process keeps open (and opens lazily, up to this many). None: one
        # per thread of the gunicorn worker (WORKER_THREADS), else SQLAlchemy's 5.
        "DATABASE_POOL_SIZE": None,
        # Set by gunicorn.conf.py (CODEXWEB_WORKER_THREADS) to its threads per worker; not a
        # setting of its own.
        "WORKER_THREADS": None,
        # Requests each process runs at once (codexweb/concurrency.py); the others wait their
        # turn. None: 4 under gunicorn (WORKER_THREADS set), else none. 0: none.
        "REQUEST_CONCURRENCY": None,
        "PUBLIC_BASE_URL": None,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        # Bodies above 1 MiB are refused with 413 before any view parses them.
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # Rate limits (flask-limiter strings): per user when logged in, per address otherwise.
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": "memory://",
        "RATELIMIT_DEFAULT": "300/minute",
        "RATELIMIT_LOGIN": "5/minute;50/hour",
        "RATELIMIT_REGISTER": "10/hour",
        "RATELIMIT_RESEND": "3/hour",
        "RATELIMIT_PASSWORD_RESET": "5/hour",
        "RATELIMIT_SESSION_CREATE": "10/minute",
        "RATELIMIT_TOKEN": "30/minute",
        "RATELIMIT_ACCOUNT_CHANGE": "10/minute;50/hour",
        "RATELIMIT_HEADERS_ENABLED": True,
        # flask-limiter would overwrite our 429's Retry-After with its own, rounded differently
        # from the body's `retry_after` (and add one to every limited 200): give it its own name.
        "RATELIMIT_HEADER_RETRY_AFTER": "X-RateLimit-Retry-After",
        # When the storage (Redis) is unreachable: True lets requests through unlimited,
        # False refuses them with 503 (codexweb/ratelimit_storage.py).
        "RATELIMIT_FAIL_OPEN": True,
        "RATELIMIT_STORAGE_TIMEOUT": 1.0,
        "RATELIMIT_STORAGE_RETRY_INTERVAL": 5,
        "RATELIMIT_STORAGE_ALERT_INTERVAL": 60,
        # Mail
        # None: `console+file` in development, `smtp` in production (where printing and
        # keeping live verification and reset links would leak them).
        "MAIL_BACKEND": None,
        "MAIL_FILE_DIR": str(Path(instance_path) / "outbox"),
        "MAIL_SERVER": "localhost",
        "MAIL_PORT": 25,
        "MAIL_USE_TLS": False,
        "MAIL_USE_SSL": False,
        "MAIL_USERNAME": None,
        "MAIL_PASSWORD": None,
        "MAIL_DEFAULT_SENDER": "codexweb <no-reply@localhost>",
        "MAIL_TIMEOUT": 10,
        # The mail queue (codexweb/outbox.py). MAIL_QUEUE None: `worker` in production (run
        # `flask --app codexweb mail worker`), `thread` otherwise (delivers in-process);
        # `manual` for tests. A failed send is retried after MAIL_RETRY_BASE × 2^(n-1) seconds,
        # at most MAIL_RETRY_MAX apart, and given up after MAIL_MAX_ATTEMPTS; a drainer holds a
        # message for MAIL_SEND_LEASE seconds while it sends.
        "MAIL_QUEUE": None,
        "MAIL_QUEUE_POLL": 1.0,
        "MAIL_MAX_ATTEMPTS": 8,
        "MAIL_RETRY_BASE": 30,
        "MAIL_RETRY_MAX": 3600,
        "MAIL_SEND_LEASE": 120,
        # Accounts
        "EMAIL_VERIFY_MAX_AGE": 172800,
        "PASSWORD_RESET_MAX_AGE": 3600,
        "ACCESS_TOKEN_TTL": 900,
        "REFRESH_TOKEN_TTL": 1209600,
        # Logins (codexweb/auth/logins.py): a "Remember me" browser login lasts this many days;
        # a refresh token rotated less than REFRESH_REUSE_GRACE seconds ago may be presented
        # once more (two tabs refreshing at once); later it counts as stolen.
        "REMEMBER_ME_DAYS": 30,
        "REFRESH_REUSE_GRACE": 30,
        # Codex sessions
        "CODEX_SESSION_IDLE_TTL": 1800,
        "CODEX_SESSION_MAX_AGE": 43200,
        # Activity within this many seconds of the last recorded one is not written again
        # (expiry moves in steps of at most this much); 0 writes on every request.
        "CODEX_SESSION_TOUCH_INTERVAL": 60,
        "CODEX_SESSION_RETENTION": 30 * 86400,
        "CODEX_CONTEXT_MAX_BYTES": 16 * 1024,
        "CODEX_AGENTS": DEFAULT_AGENTS,
        "CODEX_PLACEMENTS": ["developer-workbench", "dashboard"],
        # ChatKit
        "CHATKIT_PROVIDER": "local",
        "CHATKIT_TOKEN_TTL": 600,
        "CHATKIT_ISSUER": None,
        "CHATKIT_AUDIENCE": "chatkit",
        # Ed25519 signing keys of the local provider, one JWK file each (0600).
        "CHATKIT_KEYS_DIR": str(Path(instance_path) / "chatkit_keys"),
        # The ChatKit web component: when set, the page loads this script and mounts
        # <openai-chatkit>; its origin (and CHATKIT_CSP_ORIGINS) join the CSP.
        "CHATKIT_SCRIPT_URL": None,
        "CHATKIT_CSP_ORIGINS": [],
        # Where the page's ChatKit component talks to (local provider): None is codexweb's
        # own /chatkit; the domain key is the one OpenAI's domain allowlist gives this site.
        "CHATKIT_API_URL": None,
        "CHATKIT_DOMAIN_KEY": None,
        # Hosted ChatKit (CHATKIT_PROVIDER=openai): OpenAI's ChatKit sessions API.
        "OPENAI_API_KEY": None,
        "CHATKIT_API_BASE": "https://api.openai.com",
        "CHATKIT_UPSTREAM_TIMEOUT": 10,
        "CHATKIT_RATE_LIMIT_PER_MINUTE": 10,
        # Secure cookies: None means "only in production"; set True/False to override.
        "COOKIE_SECURE": None,
        # Behind a reverse proxy: how many proxies in front set X-Forwarded-* (0: trust none).
        "PROXY_FIX_COUNT": 0,
        # Single sign-on (OpenID Connect): on when issuer, client id and secret are all set.
        "OIDC_ISSUER": None,
        "OIDC_CLIENT_ID": None,
        "OIDC_CLIENT_SECRET": None,
        "OIDC_SCOPES": "openid email profile",
        "OIDC_NAME": "SSO",
        # Domains whose addresses an SSO login may link to an existing password account.
        "OIDC_ALLOWED_DOMAINS": [],
        # Seconds to wait for the provider (discovery, keys, token exchange) before a page
        # says it is unreachable.
        "OIDC_TIMEOUT": 10,
        # False: SSO is the only way in; the password endpoints answer 403.
        "PASSWORD_LOGIN_ENABLED": True,
        # Operating it (CONTRACT.md §8). Signing keys live in the database, sealed under
        # KEY_ENCRYPTION_KEY (None: derived from SECRET_KEY); each process re-reads them after
        # CHATKIT_KEYS_CACHE_SECONDS, so a rotation reaches every host within that time.
        # CHATKIT_KEYS_DIR above is only read to import the files of earlier versions.
        "KEY_ENCRYPTION_KEY": None,
        "CHATKIT_KEYS_CACHE_SECONDS": 30,
        "METRICS_ENABLED": False,
        "METRICS_ALLOW": ["127.0.0.1/32", "::1/128"],
        # The ChatKit runtime (/chatkit, CONTRACT §4b): user messages per Codex session and
        # minute, the longest message accepted, and seconds a model may stay silent.
        "CHATKIT_MESSAGES_PER_MINUTE": 20,
        "CHATKIT_MAX_MESSAGE_CHARS": 8000,
        "CHATKIT_MODEL_TIMEOUT": 60,
        # Seconds between the offline demo agent's words, so a browser shows the reply
        # arriving (browser tests slow it down to watch the text grow).
        "CHATKIT_DEMO_WORD_DELAY": 0.03,
    }


def instance_path_from_env() -> str | None:
    """`CODEXWEB_INSTANCE_PATH` wins; without it Flask's own default applies."""
    path = os.environ.get(f"{ENV_PREFIX}_INSTANCE_PATH")
    return str(Path(path).resolve()) if path else None


def load_config(app: Flask, test_config: dict[str, Any] | None = None) -> None:
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(defaults(app.instance_path))
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env(ENV_PREFIX)
    else:
        app.config.from_mapping(test_config)
    _require_production_settings(app)
    _resolve_secret_key(app)
    _resolve_derived(app)


def is_production(app: Flask) -> bool:
    return app.config["ENV"] == "production"


# Settings a production instance must be given rather than guess: a generated secret would
# differ per host, and links built from the request's Host header can be pointed elsewhere by
# whoever sends the request (password reset poisoning).
REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "PUBLIC_BASE_URL")


def _require_production_settings(app: Flask) -> None:
    if not is_production(app):
        return
    for key in REQUIRED_IN_PRODUCTION:
        if not app.config.get(key):
            raise RuntimeError(
                f"{key} must be set explicitly when ENV=production "
                f"(CODEXWEB_{key} or instance/config.py)"
            )


def _resolve_secret_key(app: Flask) -> None:
    if app.config.get("SECRET_KEY"):
        return
    app.config["SECRET_KEY"] = read_or_create_instance_secret(
        Path(app.instance_path) / "secret_key", lambda: secrets.token_urlsafe(48)
    )


def read_or_create_instance_secret(path: Path, generate) -> str:
    """Read a secret from the instance folder, creating it once (0600) if it is missing.

    Several gunicorn workers may start at once: `O_EXCL` makes exactly one of them write the
    file, and the others read what it wrote.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_when_written(path)
    value = generate()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _read_when_written(path: Path) -> str:
    import time

    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)  # another worker created the file and is still writing it
    raise RuntimeError(f"{path} exists but is empty")


POOL_OVERFLOW = 4


def _engine_options(config) -> dict[str, Any]:
    """`hide_parameters`: an error's text (which may reach a log) never carries bound values
    such as password or token hashes.

    A server database's pooled connections are checked before use when they sat idle
    (`database.ping_idle_connections`), not on every checkout as `pool_pre_ping` would."""
    options: dict[str, Any] = {"hide_parameters": True}
    in_memory = ":memory:" in config["DATABASE_URL"] or "mode=memory" in config["DATABASE_URL"]
    pool_size = config.get("DATABASE_POOL_SIZE") or config.get("WORKER_THREADS")
    if pool_size and not in_memory:
        # A request holds one connection from its first statement to its end; a pool smaller
        # than the requests a process serves at once made the overflow open and close a
        # connection for one request in six under load (a new PostgreSQL backend each time).
        # The few extra are for the rare request that needs a second connection at once.
        options["pool_size"] = int(pool_size)
        options["max_overflow"] = POOL_OVERFLOW
    if config["DATABASE_URL"].startswith("postgresql"):
        # Without it a connect to an unreachable host hangs for the OS's TCP timeout (minutes).
        options["connect_args"] = {"connect_timeout": int(config["DATABASE_CONNECT_TIMEOUT"])}
    return options


MAIL_BACKENDS = {
    "console": "console",
    "smtp": "smtp",
    "locmem": "locmem",
    "file": "codexweb.mail_backends.EmlFileEmailBackend",
    "console+file": "codexweb.mail_backends.ConsoleFileEmailBackend",
}

MAIL_QUEUES = ("worker", "thread", "manual")


def _resolve_derived(app: Flask) -> None:
    config = app.config
    config["SQLALCHEMY_DATABASE_URI"] = config["DATABASE_URL"]
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(config))
    backend = config.get("MAIL_BACKEND_NAME") or config["MAIL_BACKEND"]
    if backend is None:
        backend = "smtp" if is_production(app) else "console+file"
    if backend not in MAIL_BACKENDS:
        raise RuntimeError(
            f"MAIL_BACKEND must be one of {', '.join(MAIL_BACKENDS)}, not {backend!r}"
        )
    queue = config["MAIL_QUEUE"] or ("worker" if is_production(app) else "thread")
    if queue not in MAIL_QUEUES:
        raise RuntimeError(f"MAIL_QUEUE must be one of {', '.join(MAIL_QUEUES)}, not {queue!r}")
    config["MAIL_QUEUE"] = queue
    # Flask-Mailman reads MAIL_BACKEND itself: hand it the backend our name stands for.
    config["MAIL_BACKEND_NAME"] = backend
    config["MAIL_BACKEND"] = MAIL_BACKENDS[backend]
    secure = config["COOKIE_SECURE"]
    if secure is None:
        secure = is_production(app)
    config["COOKIE_SECURE"] = bool(secure)
    config["SESSION_COOKIE_SECURE"] = config["COOKIE_SECURE"]
    config["REMEMBER_COOKIE_SECURE"] = config["COOKIE_SECURE"]
    # Only remembered browser logins make their session cookie permanent (outlive the browser).
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=int(config["REMEMBER_ME_DAYS"]))
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    # CSRF is enforced by our own rule (codexweb.auth.guards.enforce_csrf), not on every POST.
    config["WTF_CSRF_CHECK_DEFAULT"] = False
    config["WTF_CSRF_TIME_LIMIT"] = None
