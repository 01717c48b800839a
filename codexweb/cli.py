"""`flask --app codexweb users|sessions|keys|mail …` commands."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .auth import accounts
from .auth.accounts import PASSWORD_MIN_LENGTH, AccountError
from .models import User

users = AppGroup("users", help="Manage user accounts.")

# Input an operator can correct is a usage error (exit 2); a rule that said no is exit 1.
_USAGE_ERRORS = frozenset({"invalid_email", "invalid_password"})
_REFUSALS = {"email_taken": "{email} is already registered"}


@contextmanager
def refusals_reported(email: str) -> Iterator[None]:
    """Say an `AccountError` to the operator as click does, in the rule's own words."""
    try:
        yield
    except AccountError as error:
        email = accounts.normalise_email(email)
        message = _REFUSALS.get(error.code, error.detail or error.code).format(email=email)
        if error.code in _USAGE_ERRORS:
            raise click.UsageError(message) from None
        raise click.ClickException(message) from None


@users.command("create")
@click.argument("email")
@click.option("--password", required=True, help=f"At least {PASSWORD_MIN_LENGTH} characters.")
@click.option("--verified", is_flag=True, help="Mark the email address as verified.")
@click.option(
    "--send-verification", is_flag=True, help="Email the user a link to verify the address."
)
def create_user_command(email: str, password: str, verified: bool, send_verification: bool) -> None:
    """Create a user account."""
    if verified and send_verification:
        raise click.UsageError("--send-verification is for unverified accounts; drop --verified")
    with refusals_reported(email):
        user = accounts.create_account(
            email, password, verified=verified, send_link=send_verification
        )
    click.echo(f"created {user.id} {user.email} verified={user.email_verified}")
    if send_verification:
        click.echo(f"verification email sent to {user.email}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def _row(user: User) -> tuple[str, ...]:
    return (
        user.email,
        "yes" if user.email_verified else "no",
        _when(user.created_at),
        _when(user.last_login_at),
        _when(user.disabled_at) if user.disabled_at else "no",
    )


@users.command("list")
def list_users_command() -> None:
    """Show every account: email, verified, created, last login, disabled (times in UTC)."""
    rows = [("EMAIL", "VERIFIED", "CREATED (UTC)", "LAST LOGIN (UTC)", "DISABLED")]
    rows += [_row(user) for user in accounts.list_accounts()]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt(
        "New password", hide_input=True, confirmation_prompt="Repeat the new password"
    )


@users.command("set-password")
@click.argument("email")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def set_password_command(email: str, password_stdin: bool) -> None:
    """Set a new password (prompted twice, never on the command line); every login ends."""
    with refusals_reported(email):
        user = accounts.account_for(email)
        accounts.set_password(user, _new_password(password_stdin))
    click.echo(f"password set for {user.email}; their logins have ended")


@users.command("disable")
@click.argument("email")
def disable_command(email: str) -> None:
    """Refuse the user's logins from now on and end the current ones."""
    with refusals_reported(email):
        user = accounts.account_for(email)
        accounts.disable_account(user)
    click.echo(f"disabled {user.email}")


@users.command("enable")
@click.argument("email")
def enable_command(email: str) -> None:
    """Let a disabled user log in again."""
    with refusals_reported(email):
        user = accounts.account_for(email)
        accounts.enable_account(user)
    click.echo(f"enabled {user.email}")


@users.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_command(email: str, yes: bool) -> None:
    """Delete the account with its sessions and logins."""
    with refusals_reported(email):
        user = accounts.account_for(email)
    if not yes:
        click.confirm(
            f"Delete {user.email} with all their sessions and logins? This cannot be undone",
            abort=True,
        )
    accounts.delete_account(user)
    click.echo(f"deleted {user.email}")


@users.command("unlink-sso")
@click.argument("email")
def unlink_sso_command(email: str) -> None:
    """Remove the single sign-on accounts linked to a user (their next sign-on links afresh).

    For a provider that gave the user a new identity (a re-created account, a new client
    id): single sign-on refuses to link a second identity of the same provider by address.
    """
    from .auth.sso import unlink_all_identities

    with refusals_reported(email):
        user = accounts.account_for(email)
    removed = unlink_all_identities(user)
    click.echo(f"removed {len(removed)} single sign-on link(s) from {user.email}")


sessions_group = AppGroup("sessions", help="Codex session housekeeping.")


@sessions_group.command("purge-expired")
def purge_expired_command() -> None:
    """Persist lapsed expiries, end their ChatKit sessions, delete rows past retention."""
    from .auth.once import purge_used_tokens
    from .codex.keys import prune_keys
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
    from .codex.keys import rotate_keys

    click.echo(f"new signing key {rotate_keys()}")


@keys_group.command("list")
def list_keys_command() -> None:
    """Show the signing keys: which one signs, which are still published."""
    from .codex.keys import key_store

    store = key_store()
    store.forget()  # the database's answer, not this process's cached copy
    current = store.current().kid
    published = {key.kid for key in store.published()}
    keys = store.keys()
    for key in keys:
        role = (
            "current" if key.kid == current else "published" if key.kid in published else "expired"
        )
        click.echo(f"{key.kid} {role} created {key.created_at.isoformat()}")


@keys_group.command("import")
@click.argument("directory", required=False, type=click.Path(file_okay=False, exists=True))
def import_keys_command(directory: str | None) -> None:
    """Import the key files of CHATKIT_KEYS_DIR (or DIRECTORY) that earlier versions wrote."""
    from pathlib import Path

    from .codex.keys import key_store

    added = key_store().import_directory(Path(directory) if directory else None)
    click.echo(f"imported {len(added)} signing key(s){': ' + ', '.join(added) if added else ''}")


@keys_group.command("reseal")
def reseal_keys_command() -> None:
    """Encrypt the stored keys again under KEY_ENCRYPTION_KEY (before changing SECRET_KEY)."""
    from .codex.keys import key_store

    click.echo(f"resealed {key_store().reseal()} signing key(s)")


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
