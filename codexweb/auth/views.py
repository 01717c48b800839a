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
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import escape

from ..errors import is_htmx, toast_trigger
from . import accounts
from .accounts import AccountError
from .cookies import clear_refresh_cookie
from .forms import ConfirmForm, EmailForm, LoginForm, RegisterForm, ResetPasswordForm
from .guards import current_request_user, require_user
from .limits import login_limit, password_reset_limit, register_limit, resend_limit
from .logins import forget_browser_login, log_in_browser, log_out_browser
from .redaction import install_werkzeug_filter
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


def _log_in_browser(user, *, via: str, target: str) -> Response:
    """Log in through a page (login session and refresh cookie), then go to `target`."""
    log_in_browser(user, method=via)
    return redirect(target)


def _no_referrer(response: Response) -> Response:
    """Pages whose URL holds a token must not leak it to other sites through Referer."""
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# Register, log in, log out ---------------------------------------------------------------


@bp.route("/register", methods=["GET", "POST"])
@register_limit
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = accounts.register_user(form.email.data, form.password.data)
        except AccountError:
            form.email.errors.append(EMAIL_TAKEN)
        else:
            flash(f"Account created. We sent a verification link to {user.email}.", "success")
            return _log_in_browser(
                user, via="register", target=url_for("auth_views.verify_pending")
            )
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
@login_limit
def login():
    target = _next_target()
    if request.method == "GET" and current_request_user() is not None:
        return redirect(target)
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.email.data, form.password.data)
        except AccountError:
            error = INVALID_CREDENTIALS
        else:
            return _log_in_browser(user, via="page", target=target)
    # Carry `next` through the form only when it is one we would honour.
    kept_next = target if target == request.args.get("next") else None
    return render_template("auth/login.html", form=form, error=error, next=kept_next)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    user = current_request_user()
    if request.method == "GET":
        if user is None:
            return redirect(url_for("auth_views.login"))
        return render_template("auth/logout.html", form=ConfirmForm(), user=user)
    log_out_browser()
    flash("You have been logged out.", "info")
    return redirect(url_for("auth_views.login"))


# Email verification ----------------------------------------------------------------------


@bp.get("/verify-email")
@require_user
def verify_pending():
    return render_template(
        "auth/verify_pending.html", user=current_request_user(), form=ConfirmForm()
    )


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
    return render_template("auth/forgot_password.html", form=form)


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
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
    return _no_referrer(Response(render_template("auth/reset_password.html", form=form)))


def _reset_link_failed(error: TokenError) -> Response:
    page = render_template("auth/reset_failed.html", expired=error.code == "token_expired")
    return _no_referrer(Response(page, status=400, mimetype="text/html"))
