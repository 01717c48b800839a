"""The rate limits of the accounts flow, shared by the JSON API and the pages.

Each limit is one flask-limiter scope used by both doors, so a client cannot double its login
budget by alternating between `/api/auth/login` and `/login`. Values are read from config at
request time (`RATELIMIT_*`), counted per user when logged in and per address otherwise.

Register, resend and reset forgive typos (CONTRACT.md §5): an answer of 422 (input refused as
invalid, by the API or a page's form) costs no attempt. Login does not: a wrong password is
a 401, and every attempt at one counts. Each limit names the action it stops, so a refusal
speaks for itself instead of blaming Codex.
"""

from __future__ import annotations

from ..extensions import limiter
from ..ratelimit import configured, counts_unless_invalid, describe_limited_action


def _account_limit(key: str, scope: str, action: str, *, forgiving: bool):
    describe_limited_action(scope, action)
    return limiter.shared_limit(
        configured(key),
        scope=scope,
        methods=["POST"],
        deduct_when=counts_unless_invalid if forgiving else None,
    )


login_limit = _account_limit(
    "RATELIMIT_LOGIN", "auth-login", "Too many sign-in attempts.", forgiving=False
)
register_limit = _account_limit(
    "RATELIMIT_REGISTER", "auth-register", "Too many sign-up attempts.", forgiving=True
)
resend_limit = _account_limit(
    "RATELIMIT_RESEND",
    "auth-resend",
    "Too many verification emails asked for.",
    forgiving=True,
)
password_reset_limit = _account_limit(
    "RATELIMIT_PASSWORD_RESET",
    "auth-password-reset",
    "Too many password reset requests.",
    forgiving=True,
)
