"""`flask --app codexweb users|sessions|keys|mail …` commands."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.exc import IntegrityError

from .auth.accounts import (
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    create_user,
    find_user_by_email,
    normalise_email,
)
from .auth.schemas import email_problem
from .extensions import db

users = AppGroup("users", help="Manage user accounts.")


@users.command("create")
@click.argument("email")
@click.option("--password", required=True, help=f"At least {PASSWORD_MIN_LENGTH} characters.")
@click.option("--verified", is_flag=True, help="Mark the email address as verified.")
def create_user_command(email: str, password: str, verified: bool) -> None:
    """Create a user account."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise click.UsageError(
            f"the password needs at least {PASSWORD_MIN_LENGTH} characters "
            f"(and at most {PASSWORD_MAX_LENGTH})"
        )
    problem = email_problem(normalise_email(email))
    if problem:
        raise click.UsageError(f"{email!r}: {problem}")
    if find_user_by_email(email) is not None:
        raise click.ClickException(f"{email.strip().lower()} is already registered")
    user = create_user(email, password, verified=verified)
    try:
        db.session.commit()
    except IntegrityError as error:
        db.session.rollback()
        raise click.ClickException(f"{email.strip().lower()} is already registered") from error
    click.echo(f"created {user.id} {user.email} verified={user.email_verified}")


sessions_group = AppGroup("sessions", help="Codex session housekeeping.")


@sessions_group.command("purge-expired")
def purge_expired_command() -> None:
    """Persist lapsed expiries, end their ChatKit sessions, delete rows past retention."""
    from .auth.once import purge_used_tokens
    from .codex.chatkit import prune_keys
    from .codex.sessions import purge_expired
    from .outbox import purge_finished

    report = purge_expired()
    click.echo(report.summary())
    forgotten = purge_used_tokens()
    if forgotten:
        click.echo(f"forgot {forgotten} used one-time token(s) past their expiry")
    retention = timedelta(seconds=int(current_app.config["CODEX_SESSION_RETENTION"]))
    mails = purge_finished(retention)
    if mails:
        click.echo(f"forgot {mails} delivered or abandoned email(s) past retention")
    pruned = prune_keys()
    if pruned:
        click.echo(f"pruned {len(pruned)} retired signing key(s): {', '.join(pruned)}")


keys_group = AppGroup("keys", help="ChatKit token signing keys.")


@keys_group.command("rotate")
def rotate_keys_command() -> None:
    """Add a new current signing key; retired ones stay published until their tokens expire."""
    from .codex.chatkit import rotate_keys

    click.echo(f"new signing key {rotate_keys()}")


@keys_group.command("list")
def list_keys_command() -> None:
    """Show the signing keys: which one signs, which are still published."""
    from .codex.chatkit import key_store

    store = key_store()
    published = {key.kid for key in store.published()}
    keys = store.keys()
    for key in keys:
        role = "current" if key is keys[-1] else "published" if key.kid in published else "expired"
        click.echo(f"{key.kid} {role} created {key.created_at.isoformat()}")


mail_group = AppGroup("mail", help="The mail queue.")


@mail_group.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option("--poll", default=2.0, show_default=True, help="Seconds between looks.")
def mail_worker_command(once: bool, poll: float) -> None:
    """Deliver queued mail until stopped (SIGTERM or Ctrl-C finish the current round)."""
    from .logging import emit
    from .outbox import deliver_due, run_worker

    if once:
        click.echo(f"sent {deliver_due()} message(s)")
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emit("mail.worker.started", poll=poll)
    run_worker(current_app._get_current_object(), stop=stop, poll=poll)
    emit("mail.worker.stopped")


def register_commands(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(sessions_group)
    app.cli.add_command(keys_group)
    app.cli.add_command(mail_group)
