"""The /account page and its forms, and `/confirm-email/<token>` (CONTRACT.md §6).

One page, five sections (email, password, logins, linked identities, deleting the account),
each its own partial: an HTMX post answers with the section it changed, a plain form post
redirects back to the page (post/redirect/get) or, when the form was refused, renders the
whole page with the error under the field. The rules are `account.py`'s, the same ones the
JSON API calls.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter import RateLimitExceeded

from ..errors import is_htmx, rate_limit_refusal, render_problem, toast_trigger, wants_json
from ..models import User
from . import account, sso
from .accounts import AccountError, has_usable_password
from .cookies import clear_refresh_cookie
from .devices import describe_device
from .forms import ChangeEmailForm, ChangePasswordForm, DeleteAccountForm
from .guards import current_request_user, require_user
from .limits import account_change_limit, count_refused_password
from .logins import current_login_id, forget_browser_login
from .password_login import password_login_enabled
from .tokens import TokenError

bp = Blueprint("account_views", __name__)
bp.add_app_template_filter(describe_device, "device")

EMAIL_TAKEN = "An account with this email address already exists."
# Which section each form lives in: the HTMX target its answer replaces.
_SECTIONS = {
    "password": "account/_password.html",
    "email": "account/_email.html",
    "logins": "account/_logins.html",
    "identities": "account/_identities.html",
    "delete": "account/_delete.html",
}
_UNLINK_REFUSALS = {
    "identity_not_found": "That sign-in is not linked to your account.",
    "password_required": (
        "Set a password first (Forgot your password? on the login page): without it, "
        "unlinking would leave no way into this account."
    ),
}


def _context(user: User, **overrides: Any) -> dict[str, Any]:
    """Everything the page shows; a section's form (with its errors) or notice may be given."""
    config = current_app.config
    context: dict[str, Any] = {
        "user": user,
        "password_form": ChangePasswordForm(formdata=None),
        "email_form": ChangeEmailForm(formdata=None),
        "delete_form": DeleteAccountForm(formdata=None),
        "logins": account.logins_of(user, current_login=current_login_id()),
        "identities": sso.list_identities(user),
        "sso_name": config["OIDC_NAME"] if sso.sso_configured(config) else None,
        "sso_issuer": config.get("OIDC_ISSUER"),
        "has_password": has_usable_password(user),
        "password_login": password_login_enabled(),
        "notices": {},
        "limited": {},
    }
    context.update(overrides)
    return context


def _render(section: str, *, status: int = 200, toast: str | None = None, **overrides) -> Response:
    """The section's partial for HTMX, else the whole page; the same context for both."""
    context = _context(current_request_user(), **overrides)
    template = _SECTIONS[section] if is_htmx() else "account/account.html"
    response = make_response(render_template(template, **context), status)
    if toast and is_htmx():
        response.headers["HX-Trigger"] = toast_trigger(toast, "success")
    return response


def _done(section: str, message: str, **overrides) -> Response:
    """A change went through: HTMX gets the section with the notice, a plain post a redirect."""
    if not is_htmx():
        flash(message, "success")
        return redirect(url_for("account_views.page"))
    return _render(section, toast=message, notices={section: message}, **overrides)


def _refused_status(form) -> int:
    """422 for input refused as invalid (htmx swaps it in, and the limit forgives it)."""
    return 422 if form.errors else 200


def _wrong_password(field) -> int:
    """Show a wrong password under its field; it costs an attempt although the page answers
    422 like any refused form."""
    count_refused_password()
    field.errors.append(account.WRONG_PASSWORD)
    return 422


@bp.get("/account")
@require_user
def page():
    return render_template("account/account.html", **_context(current_request_user()))


# Password --------------------------------------------------------------------------------


@bp.post("/account/password")
@require_user
@account_change_limit
def change_password():
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _render("password", status=_refused_status(form), password_form=form)
    try:
        account.change_password(
            current_request_user(),
            form.current_password.data,
            form.new_password.data,
            keep_login=current_login_id(),
        )
    except AccountError:
        status = _wrong_password(form.current_password)
        return _render("password", status=status, password_form=form)
    message = "Your password has been changed. Your other devices are signed out."
    # The logins list changed too: a plain post's redirect shows it, HTMX refreshes it.
    response = _done("password", message)
    if is_htmx():
        response.headers["HX-Trigger-After-Swap"] = "codexweb:logins-changed"
    return response


# Email -----------------------------------------------------------------------------------


@bp.post("/account/email")
@require_user
@account_change_limit
def change_email():
    form = ChangeEmailForm()
    if not form.validate_on_submit():
        return _render("email", status=_refused_status(form), email_form=form)
    try:
        new_email = account.request_email_change(
            current_request_user(), form.password.data, form.new_email.data
        )
    except AccountError as error:
        if error.code == "wrong_password":
            status = _wrong_password(form.password)
        elif error.code == "email_taken":
            form.new_email.errors.append(EMAIL_TAKEN)
            status = 409
        else:
            form.new_email.errors.append(error.detail or error.code)
            status = 422
        return _render("email", status=status, email_form=form)
    user = current_request_user()
    return _done(
        "email",
        f"We sent a confirmation link to {new_email}. "
        f"Your address stays {user.email} until you open it.",
    )


@bp.get("/confirm-email/<token>")
def confirm_email(token: str):
    """The link of the change-email mail: the account moves to the new address, verified."""
    try:
        user = account.confirm_email_change(token)
    except (TokenError, AccountError) as error:
        page = render_template(
            "account/confirm_failed.html",
            reason=error.code,
            logged_in=current_request_user() is not None,
        )
        response = Response(page, status=409 if error.code == "email_taken" else 400)
        return _no_referrer(response)
    flash(f"Your email address is now {user.email}.", "success")
    signed_in = current_request_user() is not None
    target = url_for("account_views.page") if signed_in else url_for("auth_views.login")
    return _no_referrer(redirect(target))


def _no_referrer(response: Response) -> Response:
    """The URL holds a token: it must not reach other sites as a Referer."""
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# Logins ----------------------------------------------------------------------------------


@bp.get("/account/logins")
@require_user
def logins():
    """The list alone (HTMX refreshes it after a password change ended the others)."""
    return _render("logins")


@bp.post("/account/logins/<login_id>/end")
@require_user
def end_login(login_id: str):
    user = current_request_user()
    try:
        account.end_own_login(user, login_id)
    except AccountError:
        # Ended meanwhile (another tab) or never the user's: the fresh list says what is left.
        return _done("logins", "That device was already signed out.")
    if login_id == current_login_id():
        return _signed_out_here("You have been logged out.")
    return _done("logins", "That device is signed out.")


@bp.post("/account/logins/end-others")
@require_user
def end_other_logins():
    ended = account.end_other_logins(current_request_user(), keep_login=current_login_id())
    noun = "device is" if ended == 1 else "devices are"
    return _done("logins", f"{ended} other {noun} signed out.")


# Linked identities -----------------------------------------------------------------------


@bp.post("/account/identities/<identity_id>/unlink")
@require_user
def unlink_identity(identity_id: str):
    try:
        sso.unlink_identity(current_request_user(), identity_id)
    except sso.SsoError as error:
        message = _UNLINK_REFUSALS[error.code]
        if not is_htmx():
            flash(message, "error")
            return redirect(url_for("account_views.page"))
        return _render("identities", status=409, notices={"identities_error": message})
    return _done("identities", "The sign-in is unlinked.")


# Deleting the account --------------------------------------------------------------------


@bp.post("/account/delete")
@require_user
@account_change_limit
def delete_account():
    form = DeleteAccountForm()
    if not form.validate_on_submit():
        return _render("delete", status=_refused_status(form), delete_form=form)
    try:
        account.delete_own_account(current_request_user(), form.password.data)
    except AccountError:
        status = _wrong_password(form.password)
        return _render("delete", status=status, delete_form=form)
    return _signed_out_here("Your account has been deleted.")


def _signed_out_here(message: str) -> Response:
    """This browser's login is gone (ended or deleted): forget it and go to the landing page."""
    forget_browser_login()
    flash(message, "info")
    target = url_for("codex_views.index")
    if is_htmx():
        response = make_response("")
        response.headers["HX-Redirect"] = target
    else:
        response = redirect(target)
    clear_refresh_cookie(response)
    return response


# Rate limits -----------------------------------------------------------------------------

_LIMITED_SECTIONS = {
    "account_views.change_password": "password",
    "account_views.change_email": "email",
    "account_views.delete_account": "delete",
}


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded) -> Response:
    """HTMX gets the toast (and its button waits, static/forms.js); a plain post keeps the
    page with the refusal at the form it stopped."""
    problem = rate_limit_refusal(error)
    section = _LIMITED_SECTIONS.get(request.endpoint or "")
    if section is None or is_htmx() or wants_json():
        return render_problem(problem)
    limited = {section: {"message": problem.detail, "retry_after": problem.extra["retry_after"]}}
    response = _render(section, status=429, limited=limited)
    response.headers.update(problem.headers)
    return response
