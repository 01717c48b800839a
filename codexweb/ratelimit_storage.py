"""Where rate-limit counters live, and what happens when that place is down.

`RATELIMIT_STORAGE_URI` is `memory://` (one process) or `redis://host:port/db`, shared by every
worker and host. When Redis cannot be reached, `RATELIMIT_FAIL_OPEN` decides:

- `True` (default): requests go through unlimited. Availability wins over the limits: losing
  the limiter for a while is better than losing the whole site with it. After a failure the
  limits are skipped for `RATELIMIT_STORAGE_RETRY_INTERVAL` seconds (per worker) so a Redis
  that hangs rather than refuses costs one timeout per interval, not one per request.
- `False`: requests that need a limit are refused with 503 `unavailable`.

Either way `ratelimit.storage_unavailable` is logged at most once per
`RATELIMIT_STORAGE_ALERT_INTERVAL` seconds per worker, with the number of failures it stands
for, instead of a traceback per request.

flask-limiter's own options do the mechanics: `wrap_exceptions` turns every storage failure
into `limits.errors.StorageError`, `swallow_errors` lets requests through; flask-limiter then
logs each swallowed failure on its `flask-limiter` logger, where a filter turns them into our
event. Its in-memory fallback was not chosen: it would count per worker, silently multiplying
every limit by the number of workers while looking like it still holds.

`memory://` (the default) is served by `SweepingMemoryStorage` below: limits' own
`MemoryStorage` with its expiry sweep run inline instead of on a thread started per request.
With Redis, `RedisFixedWindow` lets a hit's one round trip also answer the X-RateLimit-*
headers, which otherwise cost two more (GET and TTL) after every limited request.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, has_app_context, has_request_context
from flask.globals import request_ctx
from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats

from .clock import utcnow
from .extensions import limiter
from .logging import emit

REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "valkey", "valkeys")


def init_app(app: Flask) -> None:
    """Bind the limiter to `app` with its storage settings derived from ours."""
    config = app.config
    config["RATELIMIT_SWALLOW_ERRORS"] = bool(config["RATELIMIT_FAIL_OPEN"])
    config["RATELIMIT_STORAGE_OPTIONS"] = storage_options(config)
    app.extensions["codexweb.ratelimit_storage"] = StorageHealth()
    _forget_previous_app()
    # flask-limiter builds its storage from `_storage_uri` (its constructor argument) when it is
    # set, else from RATELIMIT_STORAGE_URI. Setting it only swaps `memory://` for the same
    # storage without the thread per request (SweepingMemoryStorage); the config keeps the
    # URI the operator wrote, and every other URI is left to flask-limiter as before.
    limiter._storage_uri = limiter_storage_uri(config["RATELIMIT_STORAGE_URI"])
    limiter.init_app(app)
    if limiter.enabled and RedisFixedWindow.fits(limiter._limiter):
        # The strategy flask-limiter built for RATELIMIT_STRATEGY (fixed-window, the default),
        # on the storage it built, replaced by the same strategy answering headers from hits.
        limiter._limiter = RedisFixedWindow(limiter.storage)
    flask_limiter_logger = logging.getLogger("flask-limiter")
    if _FILTER not in flask_limiter_logger.filters:
        flask_limiter_logger.addFilter(_FILTER)


def storage_options(config) -> dict[str, Any]:
    """Options for the storage: errors wrapped, and Redis timeouts so a hung Redis fails fast."""
    options: dict[str, Any] = {"wrap_exceptions": True}
    if urlsplit(config["RATELIMIT_STORAGE_URI"]).scheme in REDIS_SCHEMES:
        timeout = float(config["RATELIMIT_STORAGE_TIMEOUT"])
        options.update(socket_connect_timeout=timeout, socket_timeout=timeout)
    options.update(config.get("RATELIMIT_STORAGE_OPTIONS") or {})
    return options


def limiter_storage_uri(uri: str) -> str | None:
    """The URI flask-limiter is given instead of RATELIMIT_STORAGE_URI (None: that one)."""
    return f"{SweepingMemoryStorage.SCHEME}://" if urlsplit(uri).scheme == "memory" else None


class SweepingMemoryStorage(MemoryStorage):
    """limits' `MemoryStorage`, whose sweep of expired keys runs inline, never on a thread.

    `MemoryStorage` starts a `threading.Timer` for every hit that finds no sweep pending, and
    the sweep runs 10 ms later: at the request rates of one worker that is a new thread (and
    a walk over every key) for nearly every request, most of the storage's cost. Counting
    does not need the sweep: `get` drops an expired key whenever it is read, so a limit
    restarts on time either way. The sweep only frees the keys nobody reads again (clients
    that went away), so here it runs in the request that first hits the storage at least
    `SWEEP_INTERVAL` seconds after the previous sweep, one request at a time.

    The sweep is `MemoryStorage`'s, made safe to run in a request: limits' version indexes
    `expirations[key]` after listing the keys, and a concurrent `get` that drops the key in
    between raises KeyError. On the Timer thread that only ended the thread; in a request it
    would fail the limit check (a 500 with RATELIMIT_FAIL_OPEN off). Everything else
    (counting, expiry on read, locks, the moving window) is `MemoryStorage`'s own. It is
    registered under its own scheme; `init_app` gives it `memory://`'s place.
    """

    SCHEME = "codexweb-memory"
    STORAGE_SCHEME = [SCHEME]
    SWEEP_INTERVAL = 1.0  # seconds

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        # Not MemoryStorage.__init__, which starts the first Timer: its state, without it.
        super(MemoryStorage, self).__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.storage = Counter()
        self.locks = defaultdict(threading.RLock)
        self.expirations = {}
        self.events = {}
        self.timer = None  # MemoryStorage's pickling support deletes this attribute
        self._sweep_lock = threading.Lock()
        self._next_sweep = time.time() + self.SWEEP_INTERVAL

    def __setstate__(self, state: dict[str, Any]) -> None:  # MemoryStorage's starts a Timer
        self.__dict__.update(state)
        self.locks = defaultdict(threading.RLock)
        self.timer = None
        self._sweep_lock = threading.Lock()

    # `MemoryStorage` calls its private `__schedule_expiry` on every incr, decr and
    # acquire_entry; this replaces it (the name is the mangled one). tests/test_ratelimit_memory
    # fails if a release of limits renames it and Timer threads come back.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.time()
        if now < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self.SWEEP_INTERVAL
            self._sweep(now)
        finally:
            self._sweep_lock.release()

    def _sweep(self, now: float) -> None:
        """Drop the counts and moving-window entries that expired by `now`."""
        for key in list(self.events):
            with self.locks[key]:
                events = self.events.get(key)
                if events:  # newest first: keep those that expire after now
                    kept = events[: bisect.bisect_left(events, -now, key=lambda e: -e.expiry)]
                    self.events[key] = kept
                if not self.events.get(key):
                    # As limits does: the emptied list stays (acquire_entry indexes
                    # events[key] after its setdefault), only the lock goes.
                    self.locks.pop(key, None)
        for key in list(self.expirations):
            with self.locks[key]:  # incr writes a key's count and expiry under its lock
                if self.expirations.get(key, math.inf) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)


class RedisFixedWindow(FixedWindowRateLimiter):
    """The fixed window strategy on Redis, whose hits remember what Redis told them.

    With RATELIMIT_HEADERS_ENABLED, flask-limiter asks the strategy for the window of the
    request's limit after the view (`get_window_stats`): a GET and a TTL, two round trips on
    top of the hit's own. Here a hit runs limits' increment script with the key's TTL added
    to its answer, and keeps that count and reset time for the rest of the request (on the
    request context), where `get_window_stats` answers from it. Keys, counts and expiry are
    what limits' `RedisStorage.incr` writes; a key this request did not hit (a forgiving
    limit that was only tested, a 422) is still read from Redis.

    The one difference: `X-RateLimit-Remaining` is what was left right after this request's
    hit, not after the view returned, so it no longer includes other clients' hits made
    meanwhile. Either is a snapshot; what is counted and refused is unchanged.
    """

    # limits' incr_expire.lua (INCRBY, and EXPIRE when the key is new), answering the TTL too.
    SCRIPT = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""
    _WINDOWS = "_codexweb_limit_windows"  # attribute of the request context

    def __init__(self, storage: RedisStorage) -> None:
        super().__init__(storage)
        self.redis = storage
        self.incr_and_ttl = storage.get_connection().register_script(self.SCRIPT)

    @classmethod
    def fits(cls, strategy: object) -> bool:
        """Only limits' own fixed window on limits' Redis storages (plain, Sentinel, Cluster)."""
        return type(strategy) is FixedWindowRateLimiter and isinstance(
            strategy.storage, RedisStorage
        )

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key = item.key_for(*identifiers)
        try:
            count, ttl = self.incr_and_ttl(
                [self.redis.prefixed_key(key)], [item.get_expiry(), cost]
            )
        except self.redis.base_exceptions as error:  # as limits' storages wrap theirs
            if self.redis.wrap_exceptions:
                raise StorageError(error) from error
            raise
        if has_request_context():
            # Exactly what get_window_stats would have read: limits' get_expiry is
            # max(ttl, 0) + now, and remaining is max(0, amount - count).
            reset = max(int(ttl), 0) + time.time()
            self._windows()[key] = WindowStats(reset, max(0, item.amount - int(count)))
        return int(count) <= item.amount

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        if has_request_context():
            known = self._windows().get(item.key_for(*identifiers))
            if known is not None:
                return known
        return super().get_window_stats(item, *identifiers)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        if has_request_context():
            self._windows().pop(item.key_for(*identifiers), None)
        super().clear(item, *identifiers)

    def _windows(self) -> dict[str, WindowStats]:
        """This request's hits: key → window (the request context is never shared)."""
        windows = getattr(request_ctx, self._WINDOWS, None)
        if windows is None:
            windows = {}
            setattr(request_ctx, self._WINDOWS, windows)
        return windows


def _forget_previous_app() -> None:
    # `limiter` is one object for every app a process builds (tests build many). `init_app`
    # reads these settings from config only while they are unset, so without this reset a
    # process would keep its first app's storage options, prefix, strategy and default limits.
    limiter._swallow_errors = None
    limiter._key_prefix = ""
    limiter._storage_options = {}
    limiter._headers_enabled = None
    limiter._strategy = None
    limiter._retry_after = None
    limiter.limit_manager.set_default_limits([])
    limiter.limit_manager.set_application_limits([])


def describe_storage(uri: str) -> str:
    """The storage URI without credentials, for logs."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class StorageHealth:
    """Per-process memory of storage failures: when to log again, when to try again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_reported: datetime | None = None
        self.unreported = 0
        self.skip_until: datetime | None = None

    def failed(self, app: Flask, error: BaseException) -> None:
        now = utcnow()
        config = app.config
        with self._lock:
            if config["RATELIMIT_FAIL_OPEN"]:
                self.skip_until = now + timedelta(
                    seconds=float(config["RATELIMIT_STORAGE_RETRY_INTERVAL"])
                )
            self.unreported += 1
            interval = timedelta(seconds=float(config["RATELIMIT_STORAGE_ALERT_INTERVAL"]))
            if self.last_reported is not None and now - self.last_reported < interval:
                return
            failures, self.unreported = self.unreported, 0
            self.last_reported = now
        cause = error.__cause__ or error
        emit(
            "ratelimit.storage_unavailable",
            logging.WARNING,
            storage=describe_storage(config["RATELIMIT_STORAGE_URI"]),
            error=type(cause).__name__,
            fail_open=bool(config["RATELIMIT_FAIL_OPEN"]),
            failures=failures,
            worker_pid=os.getpid(),
            interval_seconds=interval.total_seconds(),
        )

    def skipping(self) -> bool:
        return self.skip_until is not None and utcnow() < self.skip_until


def storage_failed(error: BaseException) -> None:
    """Record a storage failure of the current app (logs the event when it is due)."""
    health = current_app.extensions.get("codexweb.ratelimit_storage")
    if health is not None:
        health.failed(current_app._get_current_object(), error)  # type: ignore[attr-defined]


@limiter.request_filter
def _storage_recently_failed() -> bool:
    """Fail-open: skip the limits for a while after the storage failed (see module doc)."""
    health = current_app.extensions.get("codexweb.ratelimit_storage")
    return bool(current_app.config.get("RATELIMIT_FAIL_OPEN")) and bool(
        health and health.skipping()
    )


class _SwallowedStorageFailures(logging.Filter):
    """flask-limiter logs every swallowed failure with a traceback: count it, log ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, StorageError) or not has_app_context():
            return True
        storage_failed(error)
        return False


_FILTER = _SwallowedStorageFailures()
