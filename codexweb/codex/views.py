"""Codex pages and their HTMX partials: the landing page, `/codex/chatkit`, `/codex/sessions`
and each session's own page.

One view, two renderings: the same URL answers the full page, or for an `HX-Request` only
the partial that changes. Every rule (one active session, expiry, ownership, validation) is
the domain's (`sessions.py`); these views parse the form, call the same functions as the
JSON API and pick a template. Without JavaScript the forms post normally and the views
answer with a redirect (post/redirect/get) or a full page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    has_request_context,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter import RateLimitExceeded
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from ..auth import accounts
from ..auth.guards import current_request_user, require_user, require_verified
from ..auth.limits import resend_limit
from ..clock import isoformat
from ..errors import Problem, is_htmx, rate_limit_refusal, render_problem, toast_trigger, wants_json
from ..extensions import db
from ..models import CodexSession, User
from ..runtime.transcript import ThreadNotFound, TranscriptPage, transcript_json, transcript_page
from . import chatkit as chatkit_tokens
from . import sessions
from .limits import session_create_limit

bp = Blueprint("codex_views", __name__)

SESSIONS_PER_PAGE = 20
TRANSCRIPT_PER_PAGE = 50
# The conversation panel shows this many of the latest messages; the rest are on the session page.
CONVERSATION_SHOWN = 100
# The history's status filter: (value, label); "" is every session.
STATUS_CHOICES = (("", "All"), ("active", "Active"), ("closed", "Closed"), ("expired", "Expired"))


# Rendering helpers -----------------------------------------------------------------------


def render_view(page: str, partial: str, *, status: int = 200, **context: Any) -> Response:
    """The full page, or for HTMX only the partial; the same context for both."""
    template = partial if is_htmx() else page
    return make_response(render_template(template, **context), status)


def with_toast(response: Response, message: str, level: str = "success") -> Response:
    response.headers["HX-Trigger"] = toast_trigger(message, level)
    return response


@bp.app_context_processor
def navigation_context() -> dict[str, Any]:
    # `swapped`: this render is an HTMX partial, so its heading takes focus (`autofocus`,
    # which htmx honours after a swap); a full page load leaves focus to the reader.
    return {"nav_user": logged_in_user(), "swapped": has_request_context() and is_htmx()}


def logged_in_user() -> User | None:
    """Who the navigation greets. Error pages render the layout too, also when the database
    is down: then the nav shows the logged-out links instead of failing the error page.
    Outside a request (an email rendered by a CLI command or the mail worker) nobody is
    greeted."""
    if not has_request_context():
        return None
    try:
        return current_user._get_current_object() if current_user.is_authenticated else None
    except SQLAlchemyError:
        db.session.rollback()
        return None


@bp.app_template_filter("timestamp")
def timestamp(moment: datetime | str | None) -> Markup:
    """`<time>` in UTC; static/app.js rewrites the text into the reader's local time.
    Accepts the API's ISO 8601 strings too (transcript items)."""
    if moment is None:
        return Markup('<span class="muted">—</span>')
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    text = moment.strftime("%d %b %Y, %H:%M UTC")
    return Markup('<time datetime="{}" data-localize>{}</time>').format(isoformat(moment), text)


def agent_names() -> dict[str, str]:
    return {agent.agent_id: agent.name for agent in sessions.available_agents()}


def placement_choices() -> list[str]:
    """Every placement some agent may use, in configuration order."""
    usable = {placement for agent in sessions.available_agents() for placement in agent.placements}
    return [name for name in current_app.config["CODEX_PLACEMENTS"] if name in usable]


def session_view(session: CodexSession) -> dict[str, Any]:
    """What the templates show of a session: names resolved, status time-aware."""
    return {
        "id": session.id,
        "agent_id": session.agent_id,
        "agent_name": agent_names().get(session.agent_id, session.agent_id),
        "placement": session.placement,
        "status": sessions.effective_status(session),
        "created_at": session.created_at,
        "last_active_at": session.last_active_at,
        "expires_at": session.expires_at,
        "closed_at": session.closed_at,
        "thread_id": session.thread_id,
    }


def conversation_view(session: CodexSession) -> dict[str, Any]:
    """The latest messages of the session's current thread, for the conversation panel to
    show before it goes live; `earlier` says older ones are on the session's page."""
    shown: list[dict[str, Any]] = []
    earlier = False
    cursor = None
    while True:
        page = transcript_json(transcript_for_page(session, cursor, limit=CONVERSATION_SHOWN))
        shown.extend(page["items"])
        if len(shown) > CONVERSATION_SHOWN:
            earlier, shown = True, shown[-CONVERSATION_SHOWN:]
        cursor = page["next_cursor"]
        if cursor is None:
            return {"thread_id": page["thread_id"], "items": shown, "earlier": earlier}


def start_form_context(
    form: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "agents": sessions.available_agents(),
        "placements": placement_choices(),
        "form": form or {},
        "form_errors": errors or {},
    }


def panel_context(user: User, **extra: Any) -> dict[str, Any]:
    """The session panel: the current session's card, or the start form."""
    context: dict[str, Any] = {"user": user, "current": None, "active": None}
    if user.email_verified:
        current = sessions.resolve_current(user)
        context["current"] = session_view(current) if current is not None else None
        context.update(start_form_context())
    context.update(extra)
    config = current_app.config
    context["chatkit_script_url"] = config.get("CHATKIT_SCRIPT_URL")
    # A self-hosted ChatKit server: the component talks to it with our token as Bearer.
    context["chatkit_api_url"] = config.get("CHATKIT_API_URL") or default_chatkit_api_url()
    context["chatkit_domain_key"] = config.get("CHATKIT_DOMAIN_KEY")
    return context


def default_chatkit_api_url() -> str | None:
    """With the local provider the ChatKit server is codexweb's own runtime; hosted ChatKit
    (the legacy `openai` provider) has none of ours and takes client secrets instead."""
    if current_app.config["CHATKIT_PROVIDER"] != "local":
        return None
    return url_for("runtime.chatkit")


def render_panel(user: User, *, status: int = 200, **extra: Any) -> Response:
    return render_view(
        "codex/chatkit.html",
        "partials/_codex_panel.html",
        status=status,
        **panel_context(user, **extra),
    )


# /codex/chatkit ----------------------------------------------------------------------------


@bp.get("/")
def index():
    """Anonymous visitors meet a landing page; anyone logged in goes straight to work."""
    if logged_in_user() is None:
        return render_template("landing.html")
    return redirect(url_for("codex_views.chatkit"))


@bp.get("/codex")
def codex_home():
    return redirect(url_for("codex_views.chatkit"))


@bp.get("/codex/chatkit")
@require_user
def chatkit():
    """Anonymous: the gate redirects to the login page. Unverified: the verify banner.
    Verified: the session panel."""
    return render_panel(current_request_user())


@bp.post("/codex/chatkit/sessions")
@require_verified
@session_create_limit
def start_session():
    user = current_request_user()
    form = {
        "agent_id": request.form.get("agent_id", "").strip(),
        "placement": request.form.get("placement", "").strip(),
    }
    try:
        session = sessions.open_session(
            user, placement=form["placement"], agent_id=form["agent_id"]
        )
    except sessions.SessionExists as conflict:
        # The rule says one active session per user, placement and agent: offer that one.
        response = render_panel(user, status=409, current=session_view(conflict.session))
        return with_toast(response, "You already have an active session there: resume it.", "info")
    except Problem as problem:
        if problem.code != "invalid_request":
            raise
        errors = {item["field"]: item["message"] for item in problem.extra.get("errors", [])}
        return render_panel(user, status=422, **start_form_context(form, errors))
    if not is_htmx():
        return redirect(url_for("codex_views.resume_session", session_id=session.id))
    return render_panel(user, active=session_view(session), conversation=conversation_view(session))


@bp.get("/codex/chatkit/sessions/<session_id>")
@require_verified
def resume_session(session_id: str):
    """The ChatKit area of one of the user's sessions (someone else's is a 404)."""
    user = current_request_user()
    session = sessions.get_owned_session(user, session_id)
    if sessions.effective_status(session) != "active":
        message = "That session has ended. Start a new one."
        if not is_htmx():
            flash(message, "info")
            return redirect(url_for("codex_views.chatkit"))
        return with_toast(render_panel(user), message, "info")
    return render_panel(user, active=session_view(session), conversation=conversation_view(session))


@bp.post("/codex/chatkit/sessions/<session_id>/close")
@require_verified
def close_session(session_id: str):
    user = current_request_user()
    sessions.close_session(user, session_id)
    if not is_htmx():
        flash("Session closed.", "success")
        return redirect(url_for("codex_views.chatkit"))
    return with_toast(render_panel(user), "Session closed.")


@bp.post("/codex/verify-email/resend")
@require_user
@resend_limit
def resend_verification():
    """The verify banner's button: send a fresh link, confirm in place (same budget as the
    API's and the auth pages' resend)."""
    user = current_request_user()
    if user.email_verified:
        # Verified meanwhile (another tab): the banner has nothing left to say.
        if not is_htmx():
            return redirect(url_for("codex_views.chatkit"))
        response = make_response("")
        response.headers["HX-Refresh"] = "true"
        return response
    accounts.send_verification(user)
    if not is_htmx():
        flash(f"A new verification email is on its way to {user.email}.", "success")
        return redirect(url_for("codex_views.chatkit"))
    return render_view(
        "codex/chatkit.html", "partials/_verify_banner.html", **panel_context(user, resent=True)
    )


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(error: RateLimitExceeded) -> Response:
    """The banner's resend, posted without JavaScript, keeps the page and says why; every
    other limit (and htmx, which gets a toast) is rendered as usual."""
    problem = rate_limit_refusal(error)
    if request.endpoint != "codex_views.resend_verification" or is_htmx() or wants_json():
        return render_problem(problem)
    limited = {"message": problem.detail, "retry_after": problem.extra["retry_after"]}
    response = render_panel(current_request_user(), status=429, limited=limited)
    response.headers.update(problem.headers)
    return response


# /codex/sessions -------------------------------------------------------------------------


@bp.get("/codex/sessions")
@require_user
def session_history():
    user = current_request_user()
    status = status_filter()
    context: dict[str, Any] = {
        "user": user,
        "rows": [],
        "next_cursor": None,
        "shown_status": status,  # not `status`: render_view takes that as the HTTP status
        "statuses": STATUS_CHOICES,
        # Paging keeps the filter; no filter adds nothing to the URL.
        "filter_args": {"status": status} if status else {},
    }
    cursor = request.args.get("cursor") or None
    if user.email_verified:
        found, next_cursor = sessions.list_sessions(
            user, status=status, limit=SESSIONS_PER_PAGE, cursor=cursor
        )
        context.update(
            rows=[session_view(session) for session in found],
            next_cursor=next_cursor,
            paged=cursor is not None,
        )
    return render_view("codex/sessions.html", "partials/_sessions_list.html", **context)


def status_filter() -> str | None:
    """`?status=` of the history: a known status, or none (every session). An unknown value
    (an old bookmark, a hand-edited URL) shows everything rather than an error page."""
    status = request.args.get("status") or None
    return status if status in sessions.STATUSES else None


@bp.get("/codex/sessions/<session_id>")
@require_verified
def session_page(session_id: str):
    """One session: its details and its transcript. Someone else's is a 404."""
    user = current_request_user()
    session = sessions.get_owned_session(user, session_id)
    return render_template(
        "codex/session.html",
        user=user,
        session=session_view(session),
        tokens_issued=chatkit_tokens.tokens_issued(session),
        transcript=transcript_json(
            transcript_for_page(session, request.args.get("cursor"), TRANSCRIPT_PER_PAGE)
        ),
        paged=bool(request.args.get("cursor")),
    )


def transcript_for_page(session: CodexSession, cursor: str | None, limit: int) -> TranscriptPage:
    """One page of the session's current thread, oldest first. A cursor this page did not
    hand out (an old bookmark, a hand-edited URL) shows the first page, not an error page."""
    try:
        return transcript_page(session, limit=limit, cursor=cursor or None)
    except Problem:
        return transcript_page(session, limit=limit)
    except ThreadNotFound:
        return TranscriptPage(session.id, None, [], None)


@bp.post("/codex/sessions/<session_id>/close")
@require_verified
def close_listed_session(session_id: str):
    user = current_request_user()
    session = sessions.close_session(user, session_id)
    if not is_htmx():
        flash("Session closed.", "success")
        return redirect(url_for("codex_views.session_history"))
    response = make_response(
        render_template("partials/_session_row.html", row=session_view(session))
    )
    return with_toast(response, "Session closed.")
