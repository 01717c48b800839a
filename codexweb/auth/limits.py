"""The rate limits of the accounts flow, shared by the JSON API and the pages.

Each limit is one flask-limiter scope used by both doors, so a client cannot double its login
budget by alternating between `/api/auth/login` and `/login`. Values are read from config at
request time (`RATELIMIT_*`).

Logging in and resetting a password count twice: per **target account** (the email the
request names) and per **client address**, never per caller identity. Counting per caller
let each Bearer token of another account buy a fresh budget of guesses at the same victim
(issue 12, finding 5); now neither a crowd of accounts nor a crowd of addresses multiplies
the guesses at one account. Registering and resending stay per user when logged in, per
address otherwise.

Register, resend and reset forgive typos (CONTRACT.md §5): an answer of 422 (input refused as
invalid, by the API or a page's form) costs no attempt. Login does not: a wrong password is
a 401, and every attempt at one counts. Each limit names the action it stops, so a refusal
speaks for itself instead of blaming Codex.

The account's own changes (password, email, deleting it: `account_change_limit`) each check
the password, so they share one budget per user; a typo in the new address or password
(422) is forgiven, a wrong password never is, even where a page shows it as a refused form.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, g, request

from ..extensions import limiter
from ..ratelimit import configured, counts_unless_invalid, describe_limited_action
from .accounts import normalise_email
from .tokens import fingerprint


def client_address_key() -> str:
    return f"addr:{request.remote_addr or 'unknown'}"


def target_account_key() -> str:
    """The account a login or reset request aims at (by the email it names, hashed so no
    address reaches the limit storage); the client address when it names none."""
    email = _named_email()
    return f"account:{fingerprint(normalise_email(email))}" if email else client_address_key()


def _named_email() -> str | None:
    data = request.get_json(silent=True) if request.is_json else request.form
    email = data.get("email") if hasattr(data, "get") else None
    return email if isinstance(email, str) and email.strip() else None


def _account_limit(
    key: str,
    scope: str,
    action: str,
    *,
    forgiving: bool,
    key_func: Callable | None = None,
    methods: tuple[str, ...] = ("POST",),
    deduct_when: Callable | None = None,
) -> Callable:
    describe_limited_action(scope, action)
    return limiter.shared_limit(
        configured(key),
        scope=scope,
        key_func=key_func,
        methods=list(methods),
        deduct_when=deduct_when or (counts_unless_invalid if forgiving else None),
    )


def _per_account_and_address(key: str, scope: str, action: str, *, forgiving: bool) -> Callable:
    per_account = _account_limit(
        key, f"{scope}-account", action, forgiving=forgiving, key_func=target_account_key
    )
    per_address = _account_limit(
        key, f"{scope}-address", action, forgiving=forgiving, key_func=client_address_key
    )
    return lambda view: per_address(per_account(view))


login_limit = _per_account_and_address(
    "RATELIMIT_LOGIN", "auth-login", "Too many sign-in attempts.", forgiving=False
)
password_reset_limit = _per_account_and_address(
    "RATELIMIT_PASSWORD_RESET",
    "auth-password-reset",
    "Too many password reset requests.",
    forgiving=True,
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


_PASSWORD_REFUSED = "_codexweb_password_refused"  # noqa: S105 (a name in `g`)


def count_refused_password() -> None:
    """This request gave a wrong password: it costs an attempt whatever its status."""
    setattr(g, _PASSWORD_REFUSED, True)


def _counts_unless_typo(response: Response) -> bool:
    return bool(g.get(_PASSWORD_REFUSED)) or counts_unless_invalid(response)


# Per user (the default key: every request here is logged in).
account_change_limit = _account_limit(
    "RATELIMIT_ACCOUNT_CHANGE",
    "auth-account-change",
    "Too many attempts to change your account.",
    forgiving=True,
    methods=("POST", "DELETE"),
    deduct_when=_counts_unless_typo,
)
