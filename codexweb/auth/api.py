"""Accounts JSON API under /api/auth (CONTRACT.md §3).

Each view parses its body (`schemas.parse_body`), calls one rule of `accounts`, and renders
the result; the rules' refusals become problems here.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..bodies import parse_body
from ..clock import isoformat
from ..errors import Problem, invalid_request, render_problem
from . import account, accounts, logins
from .accounts import AccountError
from .cookies import clear_refresh_cookie, refresh_cookie_value, set_refresh_cookie
from .guards import authentication_required, current_request_user, require_user
from .limits import (
    account_change_limit,
    login_limit,
    password_reset_limit,
    register_limit,
    resend_limit,
)
from .logins import AccessGrant, RefreshRefused
from .password_login import password_login_required
from .schemas import (
    ChangeEmailBody,
    ChangePasswordBody,
    EmailBody,
    LoginBody,
    PasswordBody,
    RegisterBody,
    ResetPasswordBody,
    TokenBody,
    login_json,
    user_json,
)
from .tokens import TokenError

bp = Blueprint("auth_api", __name__, url_prefix="/api/auth")

_ACCOUNT_PROBLEMS = {
    "email_taken": (409, "email_taken", "An account with this email address already exists."),
    "invalid_credentials": (401, "invalid_credentials", "The email or password is wrong."),
    "account_disabled": (403, "account_disabled", accounts.DISABLED_DETAIL),
    # The password confirming a change of one's own account: the caller is known, so it is
    # a bad request, not a failed authentication.
    "wrong_password": (400, "invalid_credentials", account.WRONG_PASSWORD),
    "unknown_login": (404, "not_found", "No such login."),
}
_TOKEN_DETAILS = {
    "token_expired": "This link has expired; ask for a new one.",
    "token_invalid": "This link is not valid (it may have been used already).",
}


def account_problem(error: AccountError, field: str | None = None) -> Problem:
    """The problem for a refusal; `invalid_email` is a 422 on `field` (the body's address)."""
    if error.code == "invalid_email" and field is not None:
        return invalid_request([{"field": field, "message": error.detail or error.code}])
    status, code, detail = _ACCOUNT_PROBLEMS[error.code]
    return Problem(status, code, detail)


def token_problem(error: TokenError) -> Problem:
    return Problem(400, error.code, _TOKEN_DETAILS[error.code])


def grant_json(grant: AccessGrant) -> dict:
    return {
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "expires_in": grant.expires_in,
        "expires_at": isoformat(grant.expires_at),
        "email_verified": grant.user.email_verified,
        "user": user_json(grant.user),
    }


def _accepted() -> tuple[Response, int]:
    return jsonify(status="accepted"), 202


@bp.post("/register")
@password_login_required
@register_limit
def register():
    body = parse_body(RegisterBody)
    try:
        user = accounts.register_user(body.email, body.password)
    except AccountError as error:
        raise account_problem(error) from None
    return jsonify(user=user_json(user)), 201


@bp.post("/login")
@password_login_required
@login_limit
def login():
    body = parse_body(LoginBody)
    try:
        user = accounts.authenticate(body.email, body.password)
    except AccountError as error:
        raise account_problem(error) from None
    return _granted(logins.log_in_api(user))


def _granted(grant: AccessGrant) -> Response:
    response = jsonify(grant_json(grant))
    set_refresh_cookie(response, grant.refresh_token, persistent=grant.persistent)
    return response


@bp.post("/refresh")
def refresh():
    try:
        grant = logins.rotate_refresh_token(refresh_cookie_value())
    except RefreshRefused:
        # The cookie is dead either way: tell the browser to drop it.
        response = render_problem(
            authentication_required("The refresh token is invalid, expired or revoked.")
        )
        clear_refresh_cookie(response)
        return response
    return _granted(grant)


@bp.post("/logout")
def logout():
    """End this login: the one of the refresh cookie, the Bearer token or the session cookie.

    An expired or ended access token must not stop anyone from logging out: it is ignored.
    """
    logins.log_out(refresh_token=refresh_cookie_value())
    response = Response(status=204)
    clear_refresh_cookie(response)
    return response


@bp.get("/me")
@require_user
def me():
    return jsonify(user=user_json(current_request_user()))


@bp.post("/verify-email")
def verify_email():
    body = parse_body(TokenBody)
    try:
        user = accounts.verify_email(body.token)
    except TokenError as error:
        raise token_problem(error) from None
    return jsonify(user=user_json(user))


@bp.post("/verify-email/resend")
@resend_limit
def resend_verification():
    """202 always: for the logged-in user, or for `{email}` without saying if it exists."""
    user = current_request_user()
    if user is not None:
        accounts.send_verification(user)
    else:
        accounts.resend_verification_to(parse_body(EmailBody).email)
    return _accepted()


@bp.post("/password/forgot")
@password_login_required
@password_reset_limit
def forgot_password():
    accounts.request_password_reset(parse_body(EmailBody).email)
    return _accepted()


@bp.post("/password/reset")
@password_login_required
@password_reset_limit
def reset_password():
    body = parse_body(ResetPasswordBody)
    try:
        user = accounts.reset_password(body.token, body.password)
    except TokenError as error:
        raise token_problem(error) from None
    return jsonify(user=user_json(user))


# The caller's own account (CONTRACT.md §3) -----------------------------------------------


@bp.post("/password/change")
@require_user
@account_change_limit
def change_password():
    body = parse_body(ChangePasswordBody)
    user = current_request_user()
    try:
        account.change_password(
            user, body.current_password, body.new_password, keep_login=logins.current_login_id()
        )
    except AccountError as error:
        raise account_problem(error) from None
    return jsonify(user=user_json(user))


@bp.post("/email/change")
@require_user
@account_change_limit
def change_email():
    body = parse_body(ChangeEmailBody)
    try:
        account.request_email_change(current_request_user(), body.password, body.new_email)
    except AccountError as error:
        raise account_problem(error, field="new_email") from None
    return _accepted()


@bp.post("/email/confirm")
def confirm_email():
    body = parse_body(TokenBody)
    try:
        user = account.confirm_email_change(body.token)
    except TokenError as error:
        raise token_problem(error) from None
    except AccountError as error:
        raise account_problem(error) from None
    return jsonify(user=user_json(user))


@bp.get("/logins")
@require_user
def list_logins():
    found = account.logins_of(current_request_user(), current_login=logins.current_login_id())
    return jsonify(logins=[login_json(login) for login in found])


@bp.delete("/logins/<login_id>")
@require_user
def end_login(login_id: str):
    """That login ends everywhere, as a logout would; the caller's own one too."""
    try:
        account.end_own_login(current_request_user(), login_id)
    except AccountError as error:
        raise account_problem(error) from None
    return Response(status=204)


@bp.post("/logins/revoke-others")
@require_user
def revoke_other_logins():
    account.end_other_logins(current_request_user(), keep_login=logins.current_login_id())
    return Response(status=204)


@bp.delete("/account")
@require_user
@account_change_limit
def delete_account():
    body = parse_body(PasswordBody)
    try:
        account.delete_own_account(current_request_user(), body.password)
    except AccountError as error:
        raise account_problem(error) from None
    # Its logins are gone with it: the browser's session and refresh cookies are worthless.
    logins.forget_browser_login()
    response = Response(status=204)
    clear_refresh_cookie(response)
    return response
