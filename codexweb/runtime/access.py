"""Who may call `/chatkit`: the bearer of a ChatKit token whose Codex session is still active.

The token is checked the way a third party would check it: EdDSA signature against the
published key set (`codex.chatkit.jwks()`, whatever stores the keys behind it), `iss`, `aud`,
`exp`/`nbf`. Then the session must exist, belong to `sub` (an account not disabled) and be
active by the sessions module's own rule, and the login that minted the token (`lid`) must
still be live. So closing, expiring or deleting a session, disabling its user, or ending the
login (logout, a password reset, "log out other devices") stops its tokens at once, not at
`exp`. An access token is not a ChatKit token (wrong algorithm and keys): refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from sqlalchemy import bindparam, select

from ..auth.logins import login_is_live
from ..clock import utcnow
from ..codex.chatkit import ALGORITHM, token_issuer
from ..codex.keys import reread_verifying_keys, verifying_keys
from ..codex.sessions import OWNED_SESSION_FILTER, effective_status
from ..extensions import db
from ..models import CodexSession, Login, User
from .context import RuntimeContext


class AccessRefused(Exception):
    """The caller may not use the runtime. `code` is the problem code the HTTP layer sends."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Caller:
    session: CodexSession
    context: RuntimeContext


def caller_from_token(token: str | None) -> Caller:
    """The (user, Codex session) a ChatKit token speaks for, or `AccessRefused`."""
    if not token:
        raise AccessRefused("authentication_required", "A ChatKit token is required.")
    claims = _verified_claims(token)
    session = _active_session(claims)
    return Caller(
        session=session,
        context=RuntimeContext(
            user_id=session.user_id,
            session_id=session.id,
            agent_id=session.agent_id,
            placement=session.placement,
            context=dict(session.context or {}),
            codex_session=session,
        ),
    )


def _verified_claims(token: str) -> dict:
    registry = jwt.JWTClaimsRegistry(
        leeway=0,
        iss={"essential": True, "value": token_issuer()},
        aud={"essential": True, "value": current_app.config["CHATKIT_AUDIENCE"]},
        **{name: {"essential": True} for name in ("sub", "sid", "lid", "exp")},
    )
    # No `warnings.catch_warnings()` around this: it swaps the process's warning filters,
    # and two threads of a worker interleaving it left "ignore everything" installed for
    # good. joserfc's note about the name "EdDSA" is filtered once, in `codex.keys`.
    try:
        decoded = _decode(token)
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError):
        raise AccessRefused("token_invalid", "The ChatKit token is invalid or expired.") from None
    return decoded.claims


# The token's session, while the login that minted it is live (which includes its user's
# account being enabled). Built once: every /chatkit request runs it.
_CALLER_SESSION = (
    select(CodexSession)
    .join(User, User.id == CodexSession.user_id)
    .join(Login, Login.user_id == User.id)
    .where(
        *OWNED_SESSION_FILTER,
        Login.id == bindparam("login_id"),
        *login_is_live(bindparam("now")),
    )
)


def _decode(token: str) -> jwt.Token:
    try:
        return jwt.decode(token, verifying_keys(), algorithms=[ALGORITHM])
    except InvalidKeyIdError:
        # Signed with a key this process has not cached yet (another host just rotated)?
        fresh = reread_verifying_keys()
        if fresh is None:
            raise
        return jwt.decode(token, fresh, algorithms=[ALGORITHM])


def _active_session(claims: dict) -> CodexSession:
    parameters = {
        "user_id": claims.get("sub"),
        "session_id": claims.get("sid"),
        "login_id": claims.get("lid"),
        "now": utcnow(),
    }
    session = None
    if all(isinstance(parameters[name], str) for name in ("user_id", "session_id", "login_id")):
        session = db.session.scalars(_CALLER_SESSION, parameters).first()
    if session is None or effective_status(session) != "active":
        raise AccessRefused(
            "token_invalid",
            "The Codex session or the login of this ChatKit token is no longer active.",
        )
    return session
