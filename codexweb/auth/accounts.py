"""Account rules: creating users, checking passwords, loading the user of a login session."""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

from ..clock import utcnow
from ..extensions import db
from ..models import User

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256


def normalise_email(email: str) -> str:
    """Emails are trimmed and compared case-insensitively: we store them lower-cased."""
    return email.strip().lower()


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def password_matches(user: User, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


def find_user_by_email(email: str) -> User | None:
    return db.session.execute(
        db.select(User).where(User.email == normalise_email(email))
    ).scalar_one_or_none()


def create_user(email: str, password: str, *, verified: bool = False) -> User:
    """Add a user to the session (the caller commits)."""
    user = User(
        email=normalise_email(email),
        password_hash=hash_password(password),
        email_verified_at=utcnow() if verified else None,
    )
    db.session.add(user)
    return user


def load_user(user_id: str) -> User | None:
    """flask-login's user loader."""
    return db.session.get(User, user_id)
