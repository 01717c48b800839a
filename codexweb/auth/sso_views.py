"""Single sign-on pages: `/auth/oidc/login`, `/auth/oidc/link` and the `/auth/callback`.

The callback ends in a normal browser login (login session and refresh cookie, as a password
login through the pages) or, when a logged-in user asked to link, in a linked identity. Every
failure is a page that says what happened and what to do next; none is a 500.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
)
from flask_wtf import FlaskForm

from ..models import User
from . import sso
from .account import WRONG_PASSWORD, confirm_password
from .accounts import AccountError, has_usable_password
from .forms import ConfirmForm, LinkIdentityForm
from .guards import current_request_user, require_user
from .limits import account_change_limit, count_refused_password
from .logins import log_in_browser, log_out
from .password_login import password_login_enabled
from .sso import SsoError
from .sso_client import (
    ProviderAnswer,
    authorization_redirect,
    complete_authorization,
    remember_provider_logout,
)
from .views import AFTER_LOGIN, safe_next

bp = Blueprint("sso", __name__)

# What the browser went to the provider for, kept in the login session until the callback.
_INTENT = "sso_intent"
_NEXT = "sso_next"
_LINKING_USER = "sso_linking_user"


@bp.before_request
def _only_when_configured() -> None:
    if not sso.sso_configured(current_app.config):
        abort(404)


@bp.get("/auth/oidc/login")
def login():
    session[_INTENT] = "login"
    session[_NEXT] = safe_next(request.args.get("next"))
    session.pop(_LINKING_USER, None)
    return _to_provider()


@bp.route("/auth/oidc/link", methods=["GET", "POST"])
@require_user
@account_change_limit
def link():
    """GET asks to confirm; the POST (with its CSRF token) goes to the provider, so no other
    site can make a logged-in browser link an identity of its choosing.

    The confirmation asks for the password: a linked identity is a way in that a password
    reset does not end, so a borrowed browser session must not be enough to add one. An
    account made by single sign-on has no password to ask for (its way in is the provider).
    """
    user = current_request_user()
    target = safe_next(request.args.get("next"))
    form = LinkIdentityForm() if has_usable_password(user) else ConfirmForm()
    if request.method == "GET" or not form.validate_on_submit():
        return _link_page(form, target, status=422 if form.errors else 200)
    if isinstance(form, LinkIdentityForm):
        try:
            confirm_password(user, form.password.data)
        except AccountError:
            count_refused_password()
            form.password.errors.append(WRONG_PASSWORD)
            return _link_page(form, target, status=422)
    session[_INTENT] = "link"
    session[_NEXT] = target
    session[_LINKING_USER] = user.id
    return _to_provider()


def _link_page(form: FlaskForm, target: str, *, status: int) -> Response:
    html = render_template(
        "auth/sso_link.html", form=form, sso_name=current_app.config["OIDC_NAME"], next=target
    )
    return Response(html, status=status, mimetype="text/html")


def _to_provider() -> Response:
    try:
        return authorization_redirect()
    except SsoError as error:
        return failure_page(error.code)


@bp.get("/auth/callback")
def callback():
    intent = session.pop(_INTENT, "login")
    target = session.pop(_NEXT, AFTER_LOGIN)
    linking_user = session.pop(_LINKING_USER, None)
    try:
        answer = complete_authorization()
        if intent == "link":
            return _finish_link(answer, linking_user, target)
        user = sso.sign_in(answer.issuer, answer.claims)
    except SsoError as error:
        return failure_page(error.code)
    if user.disabled_at is not None:
        return failure_page("account_disabled")
    response = _open_browser_login(user, target)
    remember_provider_logout(answer)
    return response


def _finish_link(answer: ProviderAnswer, linking_user: str | None, target: str) -> Response:
    user = current_request_user()
    if user is None or user.id != linking_user:
        # The login that asked to link has ended (or changed) meanwhile.
        raise SsoError("state_mismatch")
    sso.link_identity(
        user,
        issuer=answer.issuer,
        subject=str(answer.claims["sub"]),
        email=answer.claims.get("email"),
    )
    flash(f"Your {current_app.config['OIDC_NAME']} account is linked.", "success")
    return redirect(target)


def _open_browser_login(user: User, target: str) -> Response:
    """The one place single sign-on logs a browser in: a browser login (session and refresh
    cookie) with `auth.login.succeeded` saying `method: "oidc"`. Whoever was logged in here
    before is logged out first."""
    if current_request_user() is not None:
        log_out()
    log_in_browser(user, method="oidc")
    return redirect(target)


# Failure pages --------------------------------------------------------------------------

_STATUS = {
    "provider_unreachable": 503,
    "provider_error": 502,
    "state_mismatch": 400,
    "access_denied": 403,
    "invalid_id_token": 400,
    "email_missing": 502,
    "email_unverified": 409,
    "domain_not_allowed": 409,
    "account_linked": 409,
    "identity_in_use": 409,
    "account_disabled": 403,
}


def failure_page(code: str) -> Response:
    html = render_template(
        "auth/sso_failed.html",
        code=code,
        sso_name=current_app.config["OIDC_NAME"],
        password_login=password_login_enabled(),
        logged_in=current_request_user() is not None,
    )
    response = Response(html, status=_STATUS[code], mimetype="text/html")
    # The callback's URL carries the authorization code: never hand it on as a Referer.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
