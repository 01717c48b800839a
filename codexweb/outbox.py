"""Mail through a durable queue: an outbox table written in the request's own transaction,
delivered by a worker with retries and backoff.

Why a database outbox rather than huey or another broker: the message row commits with the
change that caused it (an account, a reset request) or not at all, on the database the app
already has, SQLite or PostgreSQL, with no second service to run, monitor or lose; and the
claim is one conditional UPDATE, so any number of workers on any number of hosts never send a
message twice at once. The volume (a few emails per user) is far from what needs a broker.

A row holds no secret: it names the kind of email, the user and the site's base URL, and the
link's token is minted when the message is sent (a reset link, bound to the password hash,
is then as fresh as it can be). Requests that must not tell known from unknown addresses
enqueue a row either way; a row without a user is dropped by the worker, so both answers
cost the same one INSERT.

Delivery (`deliver_due`): claim due rows by lease, send through Flask-Mailman, then mark them
`sent`; on failure retry after `MAIL_RETRY_BASE × 2^(attempts-1)` seconds (at most
`MAIL_RETRY_MAX`), and after `MAIL_MAX_ATTEMPTS` give up and log `mail.gave_up`. Who drains
(`MAIL_QUEUE`):

- `worker`: `flask --app codexweb mail worker` (production's default; docs/DEPLOY.md);
- `thread`: a daemon thread in each app process, woken by every commit that enqueued
  (development's default: `make run` delivers with nothing else running);
- `manual`: nobody; tests call `deliver_due()` (the `outbox` fixture does it on read).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from flask_mailman import EmailMessage
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session

from .clock import utcnow
from .extensions import db
from .logging import emit
from .models import MailMessage, User

# kind -> builds the message for a user (or None when it no longer applies: nothing to send).
Renderer = Callable[[User, str, dict[str, Any]], EmailMessage | None]
_RENDERERS: dict[str, Renderer] = {}


def renderer(kind: str) -> Callable[[Renderer], Renderer]:
    """Register how to build an email of `kind` at send time (`auth/mail.py` registers its)."""

    def register(build: Renderer) -> Renderer:
        _RENDERERS[kind] = build
        return build

    return register


def enqueue(kind: str, user: User | None, base_url: str, **params: Any) -> None:
    """Add a message to the caller's transaction; it leaves once that commits.

    `user=None` queues a row the worker drops: for answers that must cost the same whether
    or not the address is known.
    """
    db.session.add(
        MailMessage(
            kind=kind,
            user_id=user.id if user is not None else None,
            base_url=base_url,
            params=params,
            next_attempt_at=utcnow(),
        )
    )
    db.session.info["codexweb.mail_enqueued"] = True


def deliver_due(limit: int = 50) -> int:
    """Send the messages that are due now; how many were sent. Commits per message."""
    sent = 0
    for message_id in _due_ids(limit):
        if _claim(message_id):
            sent += _deliver(db.session.get(MailMessage, message_id))
    return sent


def _due_ids(limit: int) -> list[str]:
    return list(
        db.session.execute(
            select(MailMessage.id)
            .where(MailMessage.status == "pending", MailMessage.next_attempt_at <= utcnow())
            .order_by(MailMessage.next_attempt_at)
            .limit(limit)
        ).scalars()
    )


def _claim(message_id: str) -> bool:
    """Take a message for `MAIL_SEND_LEASE` seconds: no other drainer sends it meanwhile;
    if this one dies mid-send, the lease runs out and the message is tried again."""
    now = utcnow()
    lease = timedelta(seconds=int(current_app.config["MAIL_SEND_LEASE"]))
    claimed = db.session.execute(
        update(MailMessage)
        .where(
            MailMessage.id == message_id,
            MailMessage.status == "pending",
            MailMessage.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + lease, attempts=MailMessage.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return claimed == 1


def _deliver(message: MailMessage) -> int:
    db.session.refresh(message)
    user = db.session.get(User, message.user_id) if message.user_id else None
    email = _RENDERERS[message.kind](user, message.base_url, message.params) if user else None
    if email is None:
        _finish(message, "dropped")
        return 0
    try:
        email.send()
    except Exception as error:  # any transport failure: SMTP, DNS, disk, a bad config
        _failed(message, error)
        return 0
    _finish(message, "sent")
    emit(f"auth.email.{message.kind}_sent", user_id=message.user_id, attempts=message.attempts)
    return 1


def _finish(message: MailMessage, status: str) -> None:
    message.status = status
    message.finished_at = utcnow()
    db.session.commit()


def _failed(message: MailMessage, error: Exception) -> None:
    config = current_app.config
    message.last_error = type(error).__name__
    fields = {
        "user_id": message.user_id,
        "kind": message.kind,
        "attempts": message.attempts,
        "error": message.last_error,
    }
    if message.attempts >= int(config["MAIL_MAX_ATTEMPTS"]):
        _finish(message, "failed")
        emit("mail.gave_up", logging.ERROR, **fields)
        return
    message.next_attempt_at = utcnow() + retry_delay(message.attempts)
    db.session.commit()
    emit("auth.email.send_failed", logging.WARNING, retry_at=message.next_attempt_at, **fields)


def retry_delay(attempts: int) -> timedelta:
    config = current_app.config
    seconds = float(config["MAIL_RETRY_BASE"]) * 2 ** (attempts - 1)
    return timedelta(seconds=min(seconds, float(config["MAIL_RETRY_MAX"])))


def purge_finished(older_than: timedelta) -> int:
    """Forget messages sent, dropped or given up more than `older_than` ago; how many.
    Commits (run by `sessions purge-expired`)."""
    removed = db.session.execute(
        delete(MailMessage).where(
            MailMessage.status != "pending", MailMessage.finished_at <= utcnow() - older_than
        )
    )
    db.session.commit()
    return removed.rowcount


# Drainers ---------------------------------------------------------------------------------


def run_worker(app: Flask, *, stop: threading.Event, poll: float) -> None:
    """Deliver until `stop` is set, waking every `poll` seconds (or when woken)."""
    while not stop.is_set():
        with app.app_context():
            try:
                deliver_due()
            except Exception as error:  # the database away: try again next round
                db.session.rollback()
                emit("mail.worker.error", logging.ERROR, error=type(error).__name__)
            finally:
                db.session.remove()
        _wake.wait(poll)
        _wake.clear()


@dataclass(frozen=True)
class _Drainer:
    pid: int  # the process that started it: a forked worker inherits the record, not the thread
    thread: threading.Thread
    stop: threading.Event


_wake = threading.Event()
_drainer: _Drainer | None = None
_drainer_lock = threading.Lock()


def _start_drainer(app: Flask) -> None:
    """The `thread` mode's drainer: one per process (a forked worker starts its own)."""
    global _drainer
    with _drainer_lock:
        if _drainer is not None and _drainer.pid == os.getpid():
            return
        stop = threading.Event()
        thread = threading.Thread(
            target=run_worker,
            args=(app,),
            kwargs={"stop": stop, "poll": float(app.config["MAIL_QUEUE_POLL"])},
            name="codexweb-mail",
            daemon=True,
        )
        _drainer = _Drainer(os.getpid(), thread, stop)
        thread.start()


def stop_drainer(timeout: float = 10.0) -> None:
    """Stop this process's drainer and wait for it; the next enqueue starts a new one.

    A process that exits needs none of this (the thread is a daemon). Tests do: the drainer
    serves the app that started it, so in a test process it would go on delivering the mail
    of later tests' apps that share its database.
    """
    global _drainer
    with _drainer_lock:
        drainer, _drainer = _drainer, None
    if drainer is None or drainer.pid != os.getpid():
        return
    drainer.stop.set()
    _wake.set()
    drainer.thread.join(timeout)


@event.listens_for(Session, "after_commit")
def _wake_after_enqueue(session: Session) -> None:
    if not session.info.pop("codexweb.mail_enqueued", False):
        return
    app = current_app._get_current_object()
    if app.config["MAIL_QUEUE"] == "thread":
        _start_drainer(app)
        _wake.set()
