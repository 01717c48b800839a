"""Codex sessions and ChatKit tokens, JSON under /api/codex (CONTRACT.md §4), and the JWKS.

HTTP only: parse, authorise, render. The rules live in `sessions.py` and `chatkit.py`.
Every route is behind the verified gate; someone else's session is a 404.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from ..auth.guards import current_request_user, require_verified
from ..auth.logins import current_login_id
from ..bodies import parse_body
from ..clock import isoformat
from ..errors import Problem
from ..logging import emit, redact
from ..runtime.transcript import ThreadNotFound, transcript_json, transcript_page
from . import chatkit, sessions
from .limits import session_create_limit, token_limit
from .schemas import (
    ClientEventBody,
    CreateSessionBody,
    check_properties_size,
    query_text,
)

bp = Blueprint("codex_api", __name__, url_prefix="/api/codex")
wellknown = Blueprint("wellknown", __name__, url_prefix="/.well-known")

# Verifiers may cache the key set briefly; a rotation publishes the new key at once and keeps
# the old one for a whole token lifetime, so five minutes of staleness is harmless.
JWKS_MAX_AGE = 300


def _session_response(session, status: int = 200) -> Response:
    response = jsonify(sessions.session_json(session))
    response.status_code = status
    return response


@bp.get("/agents")
@require_verified
def agents():
    return jsonify(
        agents=[
            {"agent_id": agent.agent_id, "name": agent.name, "placements": agent.placements}
            for agent in sessions.available_agents()
        ]
    )


@bp.post("/sessions")
@require_verified
@session_create_limit
def create_session():
    body = parse_body(CreateSessionBody)
    try:
        session = sessions.open_session(
            current_request_user(),
            placement=body.placement,
            agent_id=body.agent_id,
            context=body.context,
            metadata=body.metadata,
        )
    except sessions.SessionExists as exists:
        raise Problem(
            409,
            "session_exists",
            "An active session for this agent and placement already exists.",
            session_id=exists.session.id,
            current=sessions.current_url(body.placement, body.agent_id),
        ) from None
    response = _session_response(session, 201)
    response.headers["Location"] = url_for(".get_session", session_id=session.id)
    return response


@bp.get("/sessions/current")
@require_verified
def current_session():
    session = sessions.resolve_current(
        current_request_user(),
        placement=query_text("placement"),
        agent_id=query_text("agent_id"),
    )
    # Fetching the current session is how a client resumes it: that is activity.
    if session is None or not sessions.touch(session):
        raise Problem(404, "session_not_found", "No active session.")
    return _session_response(session)


@bp.get("/sessions/<session_id>")
@require_verified
def get_session(session_id: str):
    return _session_response(sessions.get_owned_session(current_request_user(), session_id))


@bp.get("/sessions")
@require_verified
def list_sessions():
    rows, next_cursor = sessions.list_sessions(
        current_request_user(),
        status=query_text("status"),
        limit=sessions.parse_limit(request.args.get("limit")),
        cursor=query_text("cursor"),
    )
    return jsonify(sessions=[sessions.session_json(row) for row in rows], next_cursor=next_cursor)


@bp.get("/sessions/<session_id>/transcript")
@require_verified
def session_transcript(session_id: str):
    session = sessions.get_owned_session(current_request_user(), session_id)
    try:
        page = transcript_page(
            session,
            thread_id=query_text("thread_id"),
            limit=sessions.parse_limit(request.args.get("limit")),
            cursor=query_text("cursor"),
        )
    except ThreadNotFound:
        raise Problem(404, "session_not_found", "No such thread in this session.") from None
    response = jsonify(transcript_json(page))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/sessions/<session_id>/close")
@require_verified
def close_session(session_id: str):
    return _session_response(sessions.close_session(current_request_user(), session_id))


@bp.delete("/sessions/<session_id>")
@require_verified
def delete_session(session_id: str):
    sessions.delete_session(current_request_user(), session_id)
    return Response(status=204)


@bp.get("/chatkit/token")
@require_verified
@token_limit
def chatkit_token():
    minted = chatkit.mint_chatkit_token(
        current_request_user(),
        query_text("session_id", required=True),
        login_id=current_login_id(),
    )
    response = jsonify(
        token=minted.token,
        expires_at=isoformat(minted.expires_at),
        session_id=minted.session_id,
        chatkit_session_id=minted.chatkit_session_id,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/chatkit/sessions")
@require_verified
def chatkit_sessions():
    rows, next_cursor = chatkit.list_chatkit_sessions(
        current_request_user(),
        session_id=query_text("session_id"),
        limit=sessions.parse_limit(request.args.get("limit")),
        cursor=query_text("cursor"),
    )
    return jsonify(
        chatkit_sessions=[chatkit.chatkit_session_json(record, owner) for record, owner in rows],
        next_cursor=next_cursor,
    )


@bp.post("/events")
@require_verified
def client_event():
    body = parse_body(ClientEventBody)
    check_properties_size(body.properties)
    user = current_request_user()
    if body.session_id is not None:
        sessions.get_owned_session(user, body.session_id)
    emit(
        f"client.{body.event}",
        user_id=user.id,
        session_id=body.session_id,
        # Client-chosen names: the same redaction as event fields, one level down.
        properties=redact(body.properties or {}),
    )
    return jsonify(status="accepted"), 202


@wellknown.get("/jwks.json")
def jwks():
    response = jsonify(chatkit.jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
