"""Account pages: /register, /login, /logout, /verify-email…, /forgot-password, /reset-password.

Server-rendered Flask-WTF forms. The views parse the form, call the same `accounts` rules as
the JSON API, and render or redirect. A page login is a flask-login session **and** a refresh
cookie, so the browser's scripts can get Bearer tokens from `/api/auth/refresh`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

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
from markupsafe import escape

from ..errors import is_htmx, rate_limit_refusal, render_problem, toast_trigger, wants_json
from . import accounts
from .accounts import AccountError
from .cookies import clear_refresh_cookie
from .forms import ConfirmForm, EmailForm, LoginForm, RegisterForm, ResetPasswordForm
from .guards import current_request_user, require_user
from .limits import login_limit, password_reset_limit, register_limit, resend_limit
from .logins import forget_browser_login, log_in_browser, log_out_browser
from .password_login import (
    password_login_disabled,
    password_login_enabled,
    password_login_required,
)
from .redaction import install_werkzeug_filter
from .sso import sso_configured
from .sso_client import provider_logout_url
from .tokens import TokenError

bp = Blueprint("auth_views", __name__)
bp.record_once(lambda state: install_werkzeug_filter())

# Where a login lands when no (safe) `next` was given. The codex pages own that URL.
AFTER_LOGIN = "/codex/chatkit"

INVALID_CREDENTIALS = "The email or password is wrong."
EMAIL_TAKEN = "An account with this email address already exists. Log in instead?"


def safe_next(url: str | None, default: str = AFTER_LOGIN) -> str:
    """`url` when it is a path on this site, else `default` (no open redirects).

    Refused: absolute URLs, scheme-relative `//host`, backslashes (browsers read `/\\host`
    as `//host`), and control characters (browsers drop tabs and newlines, so `/\\t/host`
    would become `//host`).
    """
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return default
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return default
    return url


def _next_target() -> str:
    return safe_next(request.args.get("next"))


def _log_in_browser(user, *, via: str, target: str, remember: bool = False) -> Response:
    """Log in through a page (login session and refresh cookie), then go to `target`."""
    log_in_browser(user, via=via, remember=remember)
    return redirect(target)


def _form_status(form) -> int:
    """422 for a form refused as invalid: it costs no attempt against the forgiving limits
    (auth.limits), exactly like the API's 422."""
    return 422 if form.errors else 200


def _no_referrer(response: Response) -> Response:
    """Pages whose URL holds a token must not leak it to other sites through Referer."""
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# Register, log in, log out ---------------------------------------------------------------


@bp.route("/register", methods=["GET", "POST"])
@password_login_required
@register_limit
def register():
    if request.method == "GET" and current_request_user() is not None:
        return redirect(AFTER_LOGIN)
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = accounts.register_user(form.email.data, form.password.data)
        except AccountError:
            form.email.errors.append(EMAIL_TAKEN)
            return _register_page(form, status=409)
        flash(f"Account created. We sent a verification link to {user.email}.", "success")
        return _log_in_browser(user, via="register", target=url_for("auth_views.verify_pending"))
    return _register_page(form, status=_form_status(form))


def _register_page(form: RegisterForm, *, status: int = 200, limited=None) -> Response:
    page = render_template("auth/register.html", form=form, limited=limited)
    return make_response(page, status)


@bp.route("/login", methods=["GET", "POST"])
@login_limit
def login():
    target = _next_target()
    if request.method == "GET" and current_request_user() is not None:
        return redirect(target)
    if request.method == "POST" and not password_login_enabled():
        raise password_login_disabled()
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.email.data, form.password.data)
        except AccountError as refused:
            error = refused.detail or INVALID_CREDENTIALS
        else:
            return _log_in_browser(user, via="page", target=target, remember=form.remember.data)
    return _login_page(form, error=error)


def _login_page(form: LoginForm, *, error: str | None = None, limited=None) -> Response:
    # Carry `next` through the form only when it is one we would honour.
    target = _next_target()
    kept_next = target if target == request.args.get("next") else None
    page = render_template(
        "auth/login.html",
        form=form,
        error=error,
        next=kept_next,
        limited=limited,
        password_login=password_login_enabled(),
        sso_name=current_app.config["OIDC_NAME"] if sso_configured(current_app.config) else None,
    )
    return make_response(page)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    user = current_request_user()
    if request.method == "GET":
        if user is None:
            return redirect(url_for("auth_views.login"))
        return render_template("auth/logout.html", form=ConfirmForm(), user=user)
    # A single sign-on login also ends at the provider, or its next sign-in would be silent.
    provider_logout = provider_logout_url()
    log_out_browser()
    flash("You have been logged out.", "info")
    return redirect(provider_logout or url_for("auth_views.login"))


# Email verification ----------------------------------------------------------------------


@bp.get("/verify-email")
@require_user
def verify_pending():
    return _verify_pending_page()


def _verify_pending_page(*, limited=None) -> Response:
    page = render_template(
        "auth/verify_pending.html", user=current_request_user(), form=ConfirmForm(), limited=limited
    )
    return make_response(page)


@bp.post("/verify-email/resend")
@require_user
@resend_limit
def resend_verification():
    user = current_request_user()
    if user.email_verified:
        message, category = "Your email address is already verified.", "info"
    else:
        accounts.send_verification(user)
        message, category = f"A new verification email is on its way to {user.email}.", "success"
    if is_htmx():
        response = Response(f'<p class="notice">{escape(message)}</p>', mimetype="text/html")
        response.headers["HX-Trigger"] = toast_trigger(message, "info")
        return response
    flash(message, category)
    return redirect(url_for("auth_views.verify_pending"))


@bp.get("/verify-email/<token>")
def verify_link(token: str):
    try:
        accounts.verify_email(token)
    except TokenError as error:
        page = render_template(
            "auth/verify_failed.html",
            expired=error.code == "token_expired",
            user=current_request_user(),
            form=ConfirmForm(),
        )
        return _no_referrer(Response(page, status=400, mimetype="text/html"))
    flash("Your email address is verified.", "success")
    return _no_referrer(redirect(AFTER_LOGIN))


# Password reset --------------------------------------------------------------------------


@bp.route("/forgot-password", methods=["GET", "POST"])
@password_login_required
@password_reset_limit
def forgot_password():
    form = EmailForm()
    if form.validate_on_submit():
        accounts.request_password_reset(form.email.data)
        flash(
            "If an account uses that address, we have emailed it a link to choose a new "
            "password. The link works for one hour.",
            "info",
        )
        return redirect(url_for("auth_views.login"))
    return _forgot_password_page(form, status=_form_status(form))


def _forgot_password_page(form: EmailForm, *, status: int = 200, limited=None) -> Response:
    page = render_template("auth/forgot_password.html", form=form, limited=limited)
    return make_response(page, status)


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@password_login_required
@password_reset_limit
def reset_password(token: str):
    try:
        accounts.check_reset_token(token)
    except TokenError as error:
        return _reset_link_failed(error)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(token, form.password.data)
        except TokenError as error:
            return _reset_link_failed(error)
        # Every login ended with the old password: this browser logs in afresh too.
        forget_browser_login()
        flash("Your password has been changed. Log in with your new password.", "success")
        response = redirect(url_for("auth_views.login"))
        clear_refresh_cookie(response)
        return _no_referrer(response)
    return _reset_password_page(form, status=_form_status(form))


def _reset_password_page(form: ResetPasswordForm, *, status: int = 200, limited=None) -> Response:
    page = render_template("auth/reset_password.html", form=form, limited=limited)
    return _no_referrer(make_response(page, status))


def _reset_link_failed(error: TokenError) -> Response:
    page = render_template("auth/reset_failed.html", expired=error.code == "token_expired")
    return _no_referrer(Response(page, status=400, mimetype="text/html"))


# Rate limits -----------------------------------------------------------------------------

# A limited page keeps its form and what was typed (a password field never shows its value),
# with the refusal next to the form (CONTRACT.md §5).
_LIMITED_PAGES = {
    "auth_views.register": lambda limited: _register_page(RegisterForm(), limited=limited),
    "auth_views.login": lambda limited: _login_page(LoginForm(), limited=limited),
    "auth_views.resend_verification": lambda limited: _verify_pending_page(limited=limited),
    "auth_views.forgot_password": lambda limited: _forgot_password_page(
        EmailForm(), limited=limited
    ),
    "auth_views.reset_password": lambda limited: _reset_password_page(
        ResetPasswordForm(), limited=limited
    ),
}


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded) -> Response:
    problem = rate_limit_refusal(error)
    page = _LIMITED_PAGES.get(request.endpoint or "")
    if page is None or is_htmx() or wants_json():
        return render_problem(problem)
    response = page({"message": problem.detail, "retry_after": problem.extra["retry_after"]})
    response.status_code = 429
    response.headers.update(problem.headers)
    return response
