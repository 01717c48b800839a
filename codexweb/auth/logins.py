"""Logins: the server-side record of every way a user is signed in, and its ending.

A login is a browser login (a session cookie, plus a refresh cookie so the page's scripts can
get Bearer tokens) or an API login (a refresh cookie or token). Its refresh tokens form the
family whose `family_id` is the login id; its access tokens and its session cookie carry the
login id. Every request checks the row, in the same query that loads the user, so ending a
login (logout, reset, password change, a "sign out" elsewhere) ends all of them at once: the
refresh family, every access token it issued and a copied session cookie alike.

Domain functions (`start_login`, `end_login`, `end_all_logins`, `live_logins`, the refresh
family) take no request; `log_in_browser`, `log_out_browser`, `current_login_id` and
`request_caller` are the request's side.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import after_this_request, current_app, g, has_request_context, request, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import bindparam, or_, select, update

from ..clock import utcnow
from ..extensions import db
from ..logging import emit
from ..models import Login, RefreshToken, User
from .cookies import clear_refresh_cookie, set_refresh_cookie
from .credentials import bearer_claim, bearer_token
from .tokens import issue_access_token

KINDS = ("browser", "api")
USER_AGENT_MAX = 256
# The session cookie's key for the login it belongs to.
LOGIN_SESSION_KEY = "_login_id"
# `last_used_at` is written at most this often per login: the check stays a read.
TOUCH_INTERVAL = timedelta(seconds=60)

_UNRESOLVED = object()


class RefreshRefused(Exception):
    """`refresh_invalid` (unknown, expired, revoked, login ended) or `refresh_reused` (theft)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class AccessGrant:
    """What a login or a refresh hands out. `refresh_token` is the raw cookie value."""

    user: User
    login_id: str
    access_token: str
    expires_in: int
    expires_at: datetime
    refresh_token: str
    # Whether the refresh cookie outlives the browser (API logins, remembered browser logins).
    persistent: bool


# The record ------------------------------------------------------------------------------


def _idle_expiry(now: datetime) -> datetime:
    return now + timedelta(seconds=int(current_app.config["REFRESH_TOKEN_TTL"]))


def start_login(user: User, kind: str, *, user_agent: str | None, remember: bool = False) -> Login:
    """Add a live login for `user` to the session (the caller commits).

    It expires `REFRESH_TOKEN_TTL` after its last use; a remembered browser login lasts
    `REMEMBER_ME_DAYS` from its start, used or not.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    now = utcnow()
    if remember:
        expires_at = now + timedelta(days=int(current_app.config["REMEMBER_ME_DAYS"]))
    else:
        expires_at = _idle_expiry(now)
    login = Login(
        user_id=user.id,
        kind=kind,
        created_at=now,
        last_used_at=now,
        user_agent=(user_agent or None) and user_agent[:USER_AGENT_MAX],
        remember=remember,
        expires_at=expires_at,
    )
    db.session.add(login)
    db.session.flush()
    return login


def login_is_live(now):
    """A login that has not ended nor expired, of an account that is not disabled (queries
    that use it join `User`). `now` is a datetime or a bind parameter."""
    return (
        Login.ended_at.is_(None),
        or_(Login.expires_at.is_(None), Login.expires_at > now),
        User.disabled_at.is_(None),
    )


def end_login(login_id: str, *, user_id: str | None = None) -> bool:
    """End one login everywhere; False when it was not live (or, with `user_id`, not theirs).

    Commits. Its refresh tokens are revoked; its access tokens and session cookie are refused
    from the next request on, because they name an ended login.
    """
    query = update(Login).where(Login.id == login_id, Login.ended_at.is_(None))
    if user_id is not None:
        query = query.where(Login.user_id == user_id)
    now = utcnow()
    ended = db.session.execute(
        query.values(ended_at=now).execution_options(synchronize_session=False)
    ).rowcount
    if ended:
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == login_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
    if ended:
        emit("auth.login.ended", user_id=user_id, login_id=login_id)
    return bool(ended)


def end_all_logins(user_id: str, *, keep: str | None = None) -> int:
    """End every live login of a user but `keep`; how many ended. Commits the session, with
    whatever the caller changed before (a password reset ends logins in its own commit)."""
    now = utcnow()
    logins = update(Login).where(Login.user_id == user_id, Login.ended_at.is_(None))
    tokens = update(RefreshToken).where(
        RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
    )
    if keep is not None:
        logins = logins.where(Login.id != keep)
        tokens = tokens.where(RefreshToken.family_id != keep)
    ended = db.session.execute(
        logins.values(ended_at=now).execution_options(synchronize_session=False)
    ).rowcount
    db.session.execute(tokens.values(revoked_at=now).execution_options(synchronize_session=False))
    db.session.commit()
    emit("auth.logins.ended", user_id=user_id, count=ended, kept=keep)
    return ended


def live_logins(user_id: str) -> list[Login]:
    """The user's live logins, most recently used first."""
    return list(
        db.session.execute(
            select(Login)
            .join(User, User.id == Login.user_id)
            .where(Login.user_id == user_id, *login_is_live(utcnow()))
            .order_by(Login.last_used_at.desc(), Login.id)
        ).scalars()
    )


# Built once: every authenticated request runs it, and building the statement (and its cache
# key) cost more Python than executing it.
_LIVE_USER = (
    select(User, Login.last_used_at, Login.remember)
    .join(Login, Login.user_id == User.id)
    .where(Login.id == bindparam("login_id"), User.id == bindparam("user_id"))
    .where(*login_is_live(bindparam("now")))
)


def _live_user(user_id: str, login_id: str) -> User | None:
    """The user, if `login_id` is one of their live logins: one query, and a rare write.

    `last_used_at` (and the idle expiry) move at most once per `TOUCH_INTERVAL`, in their own
    commit, so the per-request check stays a single indexed read.
    """
    now = utcnow()
    row = db.session.execute(
        _LIVE_USER, {"login_id": login_id, "user_id": user_id, "now": now}
    ).first()
    if row is None:
        return None
    user, last_used_at, remember = row
    if now - last_used_at >= TOUCH_INTERVAL:
        _record_use(login_id, now, remember)
        db.session.commit()
    return user


def _record_use(login_id: str, now: datetime, remember: bool) -> None:
    """Move `last_used_at`, and the idle expiry of a login that is not remembered."""
    values: dict = {"last_used_at": now}
    if not remember:
        values["expires_at"] = _idle_expiry(now)
    db.session.execute(
        update(Login)
        .where(Login.id == login_id, Login.ended_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


# Refresh families ------------------------------------------------------------------------


def _hash_refresh(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _new_refresh_token(user_id: str, login_id: str) -> str:
    raw = secrets.token_urlsafe(32)
    db.session.add(
        RefreshToken(
            user_id=user_id,
            family_id=login_id,
            token_hash=_hash_refresh(raw),
            expires_at=_idle_expiry(utcnow()),
        )
    )
    return raw


def _grant(user: User, login_id: str, refresh_token: str, *, persistent: bool) -> AccessGrant:
    ttl = int(current_app.config["ACCESS_TOKEN_TTL"])
    return AccessGrant(
        user=user,
        login_id=login_id,
        access_token=issue_access_token(user.id, login_id),
        expires_in=ttl,
        expires_at=utcnow() + timedelta(seconds=ttl),
        refresh_token=refresh_token,
        persistent=persistent,
    )


def open_login(
    user: User,
    kind: str,
    *,
    via: str,
    user_agent: str | None,
    remember: bool = False,
    method: str = "password",
) -> AccessGrant:
    """A successful login: the login record, its first refresh token and an access token.

    `method` says how the user proved who they are: `password` or `oidc` (single sign-on).
    """
    login = start_login(user, kind, user_agent=user_agent, remember=remember)
    raw = _new_refresh_token(user.id, login.id)
    user.last_login_at = login.created_at
    db.session.commit()
    emit(
        "auth.login.succeeded",
        user_id=user.id,
        login_id=login.id,
        kind=kind,
        via=via,
        method=method,
        email_verified=user.email_verified,
    )
    return _grant(user, login.id, raw, persistent=kind == "api" or remember)


def rotate_refresh_token(raw: str | None) -> AccessGrant:
    """Trade a refresh token for a new one and a new access token.

    A token rotated less than `REFRESH_REUSE_GRACE` seconds ago is two tabs refreshing with
    one cookie at the same moment: the late one gets a sibling token and stays logged in. A
    token rotated before that is a stolen or replayed copy: its whole login ends
    (`refresh_reused`), which logs out the thief and the owner alike. The rotation is a
    conditional UPDATE, so of two concurrent refreshes exactly one rotates; the other finds the
    rotation committed and is judged by its age.
    """
    record = _find_refresh(raw)
    now = utcnow()
    if record is None or record.revoked_at is not None or record.expires_at <= now:
        raise RefreshRefused("refresh_invalid")
    if record.rotated_at is not None and not _within_grace(record.rotated_at, now):
        _reuse_detected(record)
    claimed = db.session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == record.id,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(rotated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        _judge_lost_race(record, now)
    row = db.session.execute(
        select(User, Login.remember, Login.kind)
        .join(Login, Login.user_id == User.id)
        .where(Login.id == record.family_id, *login_is_live(now))
    ).first()
    if row is None:
        db.session.rollback()
        raise RefreshRefused("refresh_invalid")
    user, remember, kind = row
    _record_use(record.family_id, now, remember)
    new_raw = _new_refresh_token(user.id, record.family_id)
    db.session.commit()
    emit("auth.token.refreshed", user_id=user.id, login_id=record.family_id)
    return _grant(user, record.family_id, new_raw, persistent=kind == "api" or remember)


def _within_grace(rotated_at: datetime, now: datetime) -> bool:
    return now - rotated_at <= timedelta(seconds=float(current_app.config["REFRESH_REUSE_GRACE"]))


def _judge_lost_race(record: RefreshToken, now: datetime) -> None:
    """Another request rotated this token between our read and our write: read its verdict."""
    db.session.rollback()
    rotated_at, revoked_at = db.session.execute(
        select(RefreshToken.rotated_at, RefreshToken.revoked_at).where(RefreshToken.id == record.id)
    ).one()
    if revoked_at is not None:
        raise RefreshRefused("refresh_invalid")
    if rotated_at is None or not _within_grace(rotated_at, now):
        _reuse_detected(record)


def _reuse_detected(record: RefreshToken) -> None:
    db.session.rollback()
    end_login(record.family_id, user_id=record.user_id)
    emit(
        "auth.refresh.reuse_detected",
        logging.WARNING,
        user_id=record.user_id,
        login_id=record.family_id,
    )
    raise RefreshRefused("refresh_reused")


def _find_refresh(raw: str | None) -> RefreshToken | None:
    if not raw or len(raw) > 512:
        return None
    return db.session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == _hash_refresh(raw))
    ).scalar_one_or_none()


def login_of_refresh_token(raw: str | None) -> str | None:
    record = _find_refresh(raw)
    return record.family_id if record is not None else None


# The request's side ----------------------------------------------------------------------


class CallerRefused(Exception):
    """A Bearer token that is bad, expired, or names an ended login."""


def request_caller() -> User | None:
    """The user of this request (Bearer first, then the login session), memoised per request.

    Raises `CallerRefused` for a present but unusable Bearer token (no silent fallback to the
    cookie).
    """
    caller = g.get("_codexweb_user", _UNRESOLVED)
    if caller is _UNRESOLVED:
        caller = _resolve_caller()
        g._codexweb_user = caller
    return caller


def _resolve_caller() -> User | None:
    if bearer_token() is not None:
        claim = bearer_claim()
        user = _live_user(claim.user_id, claim.login_id) if claim else None
        if user is None:
            raise CallerRefused
        g._codexweb_login_id = claim.login_id
        return user
    if current_user.is_authenticated:
        g._codexweb_login_id = session.get(LOGIN_SESSION_KEY)
        return current_user._get_current_object()
    return None


def current_login_id() -> str | None:
    """The login that authenticated this request (Bearer token or session cookie), or None."""
    try:
        request_caller()
    except CallerRefused:
        return None
    return g.get("_codexweb_login_id")


def forget_caller() -> None:
    """Resolve each request's caller afresh (a before_request hook).

    `g` belongs to the app context, which can outlive a request: pytest-flask keeps one open
    across every request of a test, and flask-login memoises `g._login_user` there too.
    """
    for name in ("_codexweb_user", "_codexweb_login_id", "_login_user"):
        g.pop(name, None)


def load_session_user(user_id: str) -> User | None:
    """flask-login's user loader: the session's user, while the session's login is live.

    A session cookie without a login id predates logins (or was forged): nothing could end
    it, so it opens nothing.
    """
    if not has_request_context():
        return db.session.get(User, user_id)
    login_id = session.get(LOGIN_SESSION_KEY)
    if not isinstance(login_id, str):
        return None
    return _live_user(user_id, login_id)


def _user_agent() -> str | None:
    return request.user_agent.string or None


def log_in_api(user: User, *, via: str = "api") -> AccessGrant:
    """An API login for this request's client; the caller sets the refresh cookie."""
    return open_login(user, "api", via=via, user_agent=_user_agent())


def log_in_browser(
    user: User, *, remember: bool = False, method: str = "password", via: str = "page"
) -> Login:
    """Log this browser in: a browser login, the session cookie and the refresh cookie.

    Without `remember` both cookies die with the browser; with it they last `REMEMBER_ME_DAYS`.
    Whatever the session held before (another login, an anonymous visit's CSRF secret) is
    dropped but its messages, so a session planted before the login is worth nothing after it.
    A login it held ends on the server too: a copy of the old cookie must not outlive it.
    """
    previous, previous_user = session.get(LOGIN_SESSION_KEY), session.get("_user_id")
    if isinstance(previous, str) and isinstance(previous_user, str):
        end_login(previous, user_id=previous_user)  # flask-login's user of this session
    grant = open_login(
        user, "browser", via=via, method=method, user_agent=_user_agent(), remember=remember
    )
    messages = session.get("_flashes")
    session.clear()
    if messages:
        session["_flashes"] = messages
    login_user(user)
    session[LOGIN_SESSION_KEY] = grant.login_id
    session.permanent = remember
    g._codexweb_user = user
    g._codexweb_login_id = grant.login_id

    @after_this_request
    def _set_refresh_cookie(response):
        set_refresh_cookie(response, grant.refresh_token, persistent=grant.persistent)
        return response

    return db.session.get(Login, grant.login_id)


def log_out(*, refresh_token: str | None = None) -> None:
    """End the login(s) this request presents: its refresh token's, its Bearer token's and
    its session cookie's (normally one and the same), then forget the browser's session.

    An expired or ended access token must not stop anyone from logging out: it is ignored.
    """
    record = _find_refresh(refresh_token)
    try:
        caller = request_caller()
    except CallerRefused:
        caller = None
    session_login = session.get(LOGIN_SESSION_KEY)
    candidates = {
        record.family_id if record else None,
        g.get("_codexweb_login_id"),
        session_login if isinstance(session_login, str) else None,
    }
    for login_id in sorted(candidates - {None}):
        end_login(login_id)
    user_id = caller.id if caller else (record.user_id if record else None)
    emit("auth.logout", user_id=user_id)
    forget_browser_login()


def log_out_browser() -> None:
    """End this browser's login on the server and forget it in both cookies."""
    log_out()

    @after_this_request
    def _clear_refresh_cookie(response):
        clear_refresh_cookie(response)
        return response


def forget_browser_login() -> None:
    """Forget the flask-login user and everything else in the session cookie."""
    logout_user()
    session.clear()
    for name in ("_codexweb_user", "_codexweb_login_id"):
        g.pop(name, None)
    # Flask-WTF caches this request's signed CSRF token in `g`; its secret just went away.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
