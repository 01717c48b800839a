"""`memory://` limits: limits' MemoryStorage, swept inline instead of by a thread per request.

The clock is a fake one (`time.time` as limits and codexweb read it), so nothing here waits
or depends on how fast the machine is.
"""

from __future__ import annotations

import threading
import time

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from codexweb.extensions import limiter
from codexweb.ratelimit_storage import SweepingMemoryStorage

CHEAP = "/api/auth/me"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(1_800_000_000.0)
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture
def thread_starts(monkeypatch) -> list[threading.Thread]:
    """Every thread started while the test runs (they still start)."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    return started


def test_memory_uri_gets_the_sweeping_storage(app_factory):
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI="memory://")
    assert type(limiter.storage) is SweepingMemoryStorage
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"  # the operator's URI, unchanged


def test_no_thread_is_started_per_hit(clock, thread_starts):
    storage = SweepingMemoryStorage()
    fixed = FixedWindowRateLimiter(storage)
    moving = MovingWindowRateLimiter(storage)
    item = parse("1000/minute")
    for _second in range(5):  # crosses several sweep intervals, so sweeps do run
        for _hit in range(50):
            assert fixed.hit(item, "fixed")
            assert moving.hit(item, "moving")
            storage.decr(item.key_for("fixed"))
        clock.now += storage.SWEEP_INTERVAL + 0.5
    assert thread_starts == []


def test_no_thread_is_started_per_request(app_factory, thread_starts):
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="1000/minute")
    client = app.test_client()
    thread_starts.clear()  # whatever building the app started
    for _ in range(30):
        assert client.get(CHEAP).status_code == 401
    assert [thread for thread in thread_starts if isinstance(thread, threading.Timer)] == []


def test_counts_expire_after_their_window(clock):
    storage = SweepingMemoryStorage()
    limiter_ = FixedWindowRateLimiter(storage)
    item = parse("3/minute")
    assert [limiter_.hit(item, "client") for _ in range(4)] == [True, True, True, False]
    clock.now += 59
    assert not limiter_.hit(item, "client")
    assert limiter_.get_window_stats(item, "client").remaining == 0
    clock.now += 2  # the window that started at the first hit is over
    assert limiter_.get_window_stats(item, "client").remaining == 3
    assert [limiter_.hit(item, "client") for _ in range(4)] == [True, True, True, False]


def test_moving_window_entries_expire_too(clock):
    storage = SweepingMemoryStorage()
    limiter_ = MovingWindowRateLimiter(storage)
    item = parse("2/minute")
    assert [limiter_.hit(item, "client") for _ in range(3)] == [True, True, False]
    limiter_.hit(parse("2/second"), "gone")
    clock.now += 61
    assert [limiter_.hit(item, "client") for _ in range(3)] == [True, True, False]
    assert storage.events[parse("2/second").key_for("gone")] == []  # swept
    assert len(storage.events[item.key_for("client")]) == 2


def test_the_sweep_survives_keys_dropped_under_it(clock):
    # A request's `get` may drop an expired key while the sweep walks the keys (limits' own
    # sweep raised KeyError then, harmless on its thread, not in a request).
    storage = SweepingMemoryStorage()
    limiter_ = FixedWindowRateLimiter(storage)
    item = parse("5/second")
    for client in range(3):
        limiter_.hit(item, f"client-{client}")
    clock.now += 2

    class DroppingKeys(dict):
        """Lists its keys, then a concurrent `get` drops the first (expired) one."""

        def keys(self):
            keys = list(super().keys())
            storage.get(keys[0])
            return keys

        def __iter__(self):
            return iter(self.keys())

    storage.expirations = DroppingKeys(storage.expirations)
    storage._sweep(clock.now)
    assert not storage.storage
    assert not storage.expirations


def test_the_sweep_frees_keys_nobody_reads_again(clock):
    storage = SweepingMemoryStorage()
    limiter_ = FixedWindowRateLimiter(storage)
    item = parse("5/second")
    for client in range(100):
        limiter_.hit(item, f"gone-{client}")
    assert len(storage.storage) == 100
    clock.now += 1.5  # every count above has expired, and a sweep is due
    limiter_.hit(item, "still-here")
    assert set(storage.storage) == {item.key_for("still-here")}
    assert set(storage.expirations) == {item.key_for("still-here")}


def test_the_sweep_runs_at_most_once_per_interval(clock, monkeypatch):
    storage = SweepingMemoryStorage()
    sweeps: list[float] = []
    sweep = storage._sweep

    def recorded_sweep(now: float) -> None:
        sweeps.append(now)
        sweep(now)

    monkeypatch.setattr(storage, "_sweep", recorded_sweep)
    limiter_ = FixedWindowRateLimiter(storage)
    item = parse("1000/minute")
    for _ in range(50):  # a hit every 0.1 s for 5 s
        limiter_.hit(item, "client")
        clock.now += 0.1
    assert len(sweeps) >= 4
    gaps = [later - earlier for earlier, later in zip(sweeps, sweeps[1:], strict=False)]
    assert min(gaps) >= storage.SWEEP_INTERVAL
