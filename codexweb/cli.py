"""`flask --app codexweb users|sessions|keys …` commands."""

from __future__ import annotations

import click
from flask import Flask
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
    from .codex.keys import prune_keys
    from .codex.sessions import purge_expired

    report = purge_expired()
    click.echo(report.summary())
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


def register_commands(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(sessions_group)
    app.cli.add_command(keys_group)
