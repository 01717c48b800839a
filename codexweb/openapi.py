"""OpenAPI 3.1 of the JSON API (CONTRACT.md §8), generated from the url_map and the pydantic
models; `GET /api/openapi.json`, rendered at `GET /api/docs`.

Why a small generator and not spectree or flask-openapi3: both want to own request parsing
and the error answer (their own 422 shape), and codexweb already has one place for each
(`bodies.parse_body`, `errors.py`'s problem+json). Here the views stay as they are; this
module only describes them:

- `OPERATIONS` describes each endpoint of CONTRACT §3–§4b (and the operator endpoints) by
  method and contract path: its body model (the very model `parse_body` validates with), its
  query parameters, its success answer and the problems it can answer with.
- The document lists an operation only when the application really routes it: an endpoint
  the contract names that is not built yet is left out rather than documented as a 404, and
  appears the moment its blueprint registers the route (by path, whatever the view's name).
- Response shapes are pydantic models too (below), so the schema of a SESSION or a problem is
  written once and checked by schemathesis against the live answers in CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from flask import Blueprint, Flask, current_app, jsonify, render_template
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from .auth.schemas import EmailBody, LoginBody, RegisterBody, ResetPasswordBody, TokenBody
from .codex.schemas import ClientEventBody, CreateSessionBody
from .codex.sessions import LIMIT_MAX, STATUSES
from .extensions import limiter

OPENAPI_VERSION = "3.1.0"
Time = str  # ISO 8601 UTC with Z (CONTRACT.md §4)


# Response shapes -------------------------------------------------------------------------


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class User(_Shape):
    id: str
    email: str
    email_verified: bool
    created_at: Time


class UserEnvelope(_Shape):
    user: User


class AccessGrant(_Shape):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    expires_at: Time
    email_verified: bool
    user: User


class Accepted(_Shape):
    status: Literal["accepted"]


class Login(_Shape):
    id: str
    kind: Literal["browser", "api"]
    created_at: Time
    last_used_at: Time | None
    user_agent: str | None
    current: bool


class LoginList(_Shape):
    logins: list[Login]


class Agent(_Shape):
    agent_id: str
    name: str
    placements: list[str]


class AgentList(_Shape):
    agents: list[Agent]


class Session(_Shape):
    session_id: str = Field(description="`cxs_…`, opaque")
    status: Literal["active", "closed", "expired"]
    placement: str
    agent_id: str
    context: dict[str, Any]
    metadata: dict[str, Any]
    created_at: Time
    last_active_at: Time
    expires_at: Time
    closed_at: Time | None
    thread_id: str | None = Field(
        default=None, description="The session's current ChatKit thread (null before one)."
    )


class SessionList(_Shape):
    sessions: list[Session]
    next_cursor: str | None


class ChatKitToken(_Shape):
    token: str = Field(description="An EdDSA JWT; verify it with /.well-known/jwks.json.")
    expires_at: Time
    session_id: str
    chatkit_session_id: str


class ChatKitSession(_Shape):
    chatkit_session_id: str
    session_id: str
    status: str
    placement: str
    agent_id: str
    created_at: Time
    expires_at: Time | None
    last_token_at: Time | None
    tokens_issued: int


class ChatKitSessionList(_Shape):
    chatkit_sessions: list[ChatKitSession]
    next_cursor: str | None


class TranscriptItem(_Shape):
    id: str
    role: Literal["user", "assistant", "tool"]
    text: str
    created_at: Time


class Transcript(_Shape):
    session_id: str
    thread_id: str | None
    items: list[TranscriptItem]
    next_cursor: str | None


class JsonWebKey(_Shape):
    kty: str
    kid: str
    alg: str
    use: str


class JsonWebKeySet(_Shape):
    keys: list[JsonWebKey]


class Health(_Shape):
    status: Literal["ok", "unavailable"]


class Readiness(_Shape):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "failed", "skipped"]]
    failed: list[str]


class Problem(_Shape):
    """RFC 9457 problem details (CONTRACT.md §5)."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class FieldError(_Shape):
    field: str
    message: str


class InvalidRequest(Problem):
    errors: list[FieldError]


class RateLimited(Problem):
    retry_after: int


class SessionExists(Problem):
    session_id: str | None = None
    current: str | None = None


# Request bodies the contract names whose views other work is adding --------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChangePasswordBody(_Body):
    current_password: str
    new_password: str = Field(min_length=12, max_length=256)


class ChangeEmailBody(_Body):
    password: str
    new_email: str


class DeleteAccountBody(_Body):
    password: str


def _supported_request_types(schema: dict[str, Any]) -> None:
    # When the document is built, not at import: the SDK takes seconds to load.
    from .runtime.views import supported_request_types

    schema["properties"]["type"]["enum"] = supported_request_types()


class ChatKitRequest(BaseModel):
    """A request of the ChatKit server protocol (CONTRACT.md §4b), as the ChatKit web
    component and the `openai-chatkit` SDK send it. The SDK validates the whole request; this
    describes its envelope, and lists the request types the installed SDK has and this
    server answers."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_supported_request_types,
    )

    type: str = Field(
        description="`threads.create` and `threads.add_user_message` carry a new message and "
        "answer with a stream of events, as do the other requests that run the agent; the "
        "rest answer JSON. Attachments, transcription and custom actions are refused (422).",
        examples=["threads.list"],
    )
    params: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


# Operations ------------------------------------------------------------------------------

# "chatkit": a ChatKit token from `GET /api/codex/chatkit/token`, never an access token.
Auth = Literal["none", "optional", "user", "verified", "chatkit"]

PROBLEM_MODELS: dict[int, type[Problem]] = {422: InvalidRequest, 429: RateLimited}
PROBLEM_TEXT = {
    400: "Bad request (e.g. a value that cannot be stored)",
    401: "`authentication_required` (or `invalid_credentials` where noted; `token_invalid` "
    "for a ChatKit token that is bad, expired or outlived its session or login)",
    403: "`email_not_verified`, or `csrf_failed` for a cookie request without its token",
    404: "Not found (`session_not_found`; `not_found` for a ChatKit thread or item): "
    "someone else's is never a 403",
    409: "Conflict",
    413: "Request body too large",
    422: "`invalid_request`, with `errors: [{field, message}]`",
    429: "`rate_limited`, with `Retry-After` and `retry_after`",
    503: "`unavailable`: a dependency (the database) is out of reach",
}


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    status: int
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    auth: Auth = "verified"
    problems: tuple[int, ...] = ()
    problem_models: dict[int, type[Problem]] = field(default_factory=dict)
    body_optional: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # The success answer's media types, when it is not one JSON model.
    content: dict[str, Any] = field(default_factory=dict)


LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX})
CURSOR = Query("cursor", {"type": "string"}, description="`next_cursor` of the previous page")
SESSION_ID = Query("session_id", {"type": "string"})
BODY_PROBLEMS = (400, 413, 422)

OPERATIONS: dict[tuple[str, str], Operation] = {
    # Accounts (CONTRACT.md §3)
    ("POST", "/api/auth/register"): Operation(
        "Create an account and send the verification email",
        "accounts",
        201,
        UserEnvelope,
        RegisterBody,
        auth="none",
        problems=(*BODY_PROBLEMS, 409, 429),
    ),
    ("POST", "/api/auth/login"): Operation(
        "Log in: an access token, and the refresh cookie",
        "accounts",
        200,
        AccessGrant,
        LoginBody,
        auth="none",
        problems=(*BODY_PROBLEMS, 401, 429),
    ),
    ("POST", "/api/auth/refresh"): Operation(
        "A new access token for the refresh cookie (which rotates)",
        "accounts",
        200,
        AccessGrant,
        auth="none",
        problems=(401,),
    ),
    ("POST", "/api/auth/logout"): Operation(
        "End this login everywhere", "accounts", 204, auth="optional", problems=(403,)
    ),
    ("GET", "/api/auth/me"): Operation(
        "The logged-in user", "accounts", 200, UserEnvelope, auth="user", problems=(401,)
    ),
    ("POST", "/api/auth/verify-email"): Operation(
        "Verify the email address with the token from the link",
        "accounts",
        200,
        UserEnvelope,
        TokenBody,
        auth="none",
        problems=BODY_PROBLEMS,
    ),
    ("POST", "/api/auth/verify-email/resend"): Operation(
        "Send the verification email again (202 whether or not the address is known)",
        "accounts",
        202,
        Accepted,
        EmailBody,
        auth="optional",
        body_optional=True,
        problems=(*BODY_PROBLEMS, 403, 429),
    ),
    ("POST", "/api/auth/password/forgot"): Operation(
        "Mail a password reset link (202 whether or not the address is known)",
        "accounts",
        202,
        Accepted,
        EmailBody,
        auth="none",
        problems=(*BODY_PROBLEMS, 429),
    ),
    ("POST", "/api/auth/password/reset"): Operation(
        "Set a new password with the single-use token from the link",
        "accounts",
        200,
        UserEnvelope,
        ResetPasswordBody,
        auth="none",
        problems=(*BODY_PROBLEMS, 429),
    ),
    ("POST", "/api/auth/password/change"): Operation(
        "Change the password; every other login ends",
        "accounts",
        200,
        UserEnvelope,
        ChangePasswordBody,
        auth="user",
        problems=(*BODY_PROBLEMS, 401, 403, 429),
    ),
    ("POST", "/api/auth/email/change"): Operation(
        "Ask to change the email address (confirmed by a link to the new one)",
        "accounts",
        202,
        Accepted,
        ChangeEmailBody,
        auth="user",
        problems=(*BODY_PROBLEMS, 401, 403, 409, 429),
    ),
    ("POST", "/api/auth/email/confirm"): Operation(
        "Confirm the new email address with the token from the link",
        "accounts",
        200,
        UserEnvelope,
        TokenBody,
        auth="optional",
        problems=(*BODY_PROBLEMS, 403),
    ),
    ("GET", "/api/auth/logins"): Operation(
        "The user's live logins", "accounts", 200, LoginList, auth="user", problems=(401,)
    ),
    ("DELETE", "/api/auth/logins/{id}"): Operation(
        "End one login everywhere", "accounts", 204, auth="user", problems=(400, 401, 403, 404)
    ),
    ("POST", "/api/auth/logins/revoke-others"): Operation(
        "End every login but this one", "accounts", 204, auth="user", problems=(401, 403)
    ),
    ("DELETE", "/api/auth/account"): Operation(
        "Delete the account, its sessions, transcripts and logins",
        "accounts",
        204,
        body=DeleteAccountBody,
        auth="user",
        problems=(*BODY_PROBLEMS, 401, 403, 429),
    ),
    # Codex sessions and ChatKit tokens (CONTRACT.md §4)
    ("GET", "/api/codex/agents"): Operation("The agents you may start", "codex", 200, AgentList),
    ("POST", "/api/codex/sessions"): Operation(
        "Start a Codex session",
        "codex",
        201,
        Session,
        CreateSessionBody,
        problems=(*BODY_PROBLEMS, 409, 429),
        problem_models={409: SessionExists},
        headers={"Location": "The new session's URL"},
    ),
    ("GET", "/api/codex/sessions/current"): Operation(
        "Your most recently active session (counts as activity)",
        "codex",
        200,
        Session,
        query=(Query("placement", {"type": "string"}), Query("agent_id", {"type": "string"})),
        problems=(400, 404, 422),
    ),
    ("GET", "/api/codex/sessions/{session_id}"): Operation(
        "One of your sessions, in any status", "codex", 200, Session, problems=(400, 404)
    ),
    ("GET", "/api/codex/sessions"): Operation(
        "Your sessions, newest first",
        "codex",
        200,
        SessionList,
        query=(Query("status", {"type": "string", "enum": list(STATUSES)}), LIMIT, CURSOR),
        problems=(400, 422),
    ),
    ("POST", "/api/codex/sessions/{session_id}/close"): Operation(
        "Close a session (idempotent)", "codex", 200, Session, problems=(400, 404)
    ),
    ("DELETE", "/api/codex/sessions/{session_id}"): Operation(
        "Close and delete a session", "codex", 204, problems=(400, 404)
    ),
    ("GET", "/api/codex/chatkit/token"): Operation(
        "Mint a ChatKit client token for an active session (counts as activity)",
        "codex",
        200,
        ChatKitToken,
        query=(Query("session_id", {"type": "string"}, required=True),),
        problems=(400, 404, 422, 429),
    ),
    ("GET", "/api/codex/chatkit/sessions"): Operation(
        "Your ChatKit sessions, newest first",
        "codex",
        200,
        ChatKitSessionList,
        query=(SESSION_ID, LIMIT, CURSOR),
        problems=(400, 404, 422),
    ),
    ("POST", "/api/codex/events"): Operation(
        "Report a lifecycle event of the browser's ChatKit",
        "codex",
        202,
        Accepted,
        ClientEventBody,
        problems=(*BODY_PROBLEMS, 404),
    ),
    ("GET", "/api/codex/sessions/{session_id}/transcript"): Operation(
        "The messages of a session's current (or given) thread, oldest first",
        "codex",
        200,
        Transcript,
        query=(Query("thread_id", {"type": "string"}), LIMIT, CURSOR),
        problems=(400, 404, 422),
    ),
    ("GET", "/.well-known/jwks.json"): Operation(
        "The public keys that verify ChatKit tokens", "codex", 200, JsonWebKeySet, auth="none"
    ),
    # Operating it (CONTRACT.md §1, §8)
    ("GET", "/healthz"): Operation(
        "Liveness: the database answers", "operations", 200, Health, auth="none"
    ),
    ("GET", "/readyz"): Operation(
        "Readiness: database, rate-limit storage and signing keys, each named",
        "operations",
        200,
        Readiness,
        auth="none",
        problem_models={503: Readiness},
    ),
    # The ChatKit runtime (CONTRACT.md §4b)
    ("POST", "/chatkit"): Operation(
        "The conversation: a ChatKit protocol request, answered as JSON or as a stream",
        "chatkit",
        200,
        body=ChatKitRequest,
        auth="chatkit",
        problems=(*BODY_PROBLEMS, 404),
        content={
            "application/json": {
                "schema": {"type": "object"},
                "example": {"data": [], "has_more": False},
            },
            # The schema of each event of the stream, as schemathesis reads it (and OpenAPI
            # 3.2's `itemSchema` says outright).
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One Server-Sent Event, `data: {json}`: `thread.created`, "
                    "`thread.item.added`, `thread.item.updated` (text deltas), "
                    "`thread.item.done`, `error`, …",
                    "properties": {
                        "data": {"type": "string", "contentMediaType": "application/json"}
                    },
                    "required": ["data"],
                },
            },
        },
    ),
}

# Every operation that reads the database may answer 503 while it is out of reach; every
# authenticated one may meet the verified gate and its rate limit.
_AUTH_PROBLEMS: dict[str, tuple[int, ...]] = {
    "none": (),
    "optional": (),
    "user": (401,),
    "verified": (401, 403, 429),
    "chatkit": (401, 429),
}


# The document ----------------------------------------------------------------------------

_PATH_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _contract_path(rule: str) -> tuple[str, list[str]]:
    """`/api/x/<session_id>` -> (`/api/x/{}`, ["session_id"]): compared by shape, not name."""
    return _PATH_PARAMETER.sub("{}", rule), _PATH_PARAMETER.findall(rule)


def routed_operations(app: Flask) -> list[tuple[str, str, list[str], Operation]]:
    """(method, OpenAPI path, parameter names, operation) of each described route that exists."""
    described = {
        (method, re.sub(r"\{[^}]+\}", "{}", path)): operation
        for (method, path), operation in OPERATIONS.items()
    }
    found = []
    for rule in app.url_map.iter_rules():
        shape, names = _contract_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = described.get((method, shape))
            if operation is not None:
                path = shape.format(*(f"{{{name}}}" for name in names))
                found.append((method, path, names, operation))
    return found


def _problem_statuses(operation: Operation) -> list[int]:
    statuses = {*operation.problems, *_AUTH_PROBLEMS[operation.auth], 503}
    statuses |= set(operation.problem_models)
    statuses.discard(operation.status)
    return sorted(statuses)


def _responses(operation: Operation) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": operation.summary}
    if operation.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(operation.response)}}
    if operation.content:
        ok["content"] = operation.content
    if operation.headers:
        ok["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in operation.headers.items()
        }
    responses: dict[str, Any] = {str(operation.status): ok}
    for status in _problem_statuses(operation):
        model = operation.problem_models.get(status) or PROBLEM_MODELS.get(status, Problem)
        media = "application/json" if model is Readiness else "application/problem+json"
        answer: dict[str, Any] = {
            "description": PROBLEM_TEXT.get(status, "Problem"),
            "content": {media: {"schema": _ref(model)}},
        }
        if status == 429:
            answer["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
            }
        responses[str(status)] = answer
    responses["414"] = URI_TOO_LONG
    return responses


# A request line past gunicorn's `limit_request_line` (4094 bytes), or nginx's buffers, is
# refused before it reaches the app: in HTML, by the server, on every operation.
URI_TOO_LONG = {
    "description": "Request line too long; answered by the HTTP server in front of the app",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def _security(auth: Auth) -> list[dict[str, list]]:
    schemes: list[dict[str, list]] = [{"bearer": []}, {"browser": []}]
    if auth == "none":
        return []
    if auth == "chatkit":
        return [{"chatkit": []}]
    if auth == "optional":
        return [*schemes, {}]
    return schemes


def _operation(method: str, path: str, names: list[str], operation: Operation) -> dict:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]
    parameters += [
        {
            "name": query.name,
            "in": "query",
            "required": query.required,
            "schema": query.schema,
            **({"description": query.description} if query.description else {}),
        }
        for query in operation.query
    ]
    document: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": _security(operation.auth),
        "responses": _responses(operation),
    }
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    return document


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path.replace("{", "by_"))
    return method.lower() + "".join(word.capitalize() for word in words)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@cache
def _component_schemas() -> dict[str, Any]:
    models: set[type[BaseModel]] = {Problem, InvalidRequest, RateLimited, SessionExists}
    for operation in OPERATIONS.values():
        models.update(m for m in (operation.body, operation.response) if m is not None)
        models.update(operation.problem_models.values())
    pairs = [
        (model, "validation" if model in _request_models() else "serialization")
        for model in sorted(models, key=lambda model: model.__name__)
    ]
    _, schema = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    return schema.get("$defs", {})


def _request_models() -> set[type[BaseModel]]:
    return {operation.body for operation in OPERATIONS.values() if operation.body is not None}


def build_document(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, names, operation in routed_operations(app):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, names, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "codexweb",
            "version": _version(),
            "description": "Accounts, Codex sessions, ChatKit tokens and the conversation "
            "itself (`POST /chatkit`). Errors are RFC 9457 problem+json. Authenticate with "
            "`Authorization: Bearer <access_token>` from `POST /api/auth/login`, or the "
            "browser's login cookie (with `X-CSRFToken` on unsafe methods); `POST /chatkit` "
            "takes a ChatKit token instead.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "browser": {"type": "apiKey", "in": "cookie", "name": "session"},
                "chatkit": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A ChatKit token from `GET /api/codex/chatkit/token`, "
                    "for `POST /chatkit` only",
                },
            },
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codexweb")
    except PackageNotFoundError:
        return "0"


bp = Blueprint("openapi", __name__, url_prefix="/api")


@bp.get("/openapi.json")
@limiter.exempt
def openapi_json():
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    document = app.extensions.get("codexweb.openapi")
    if document is None:
        # Built on first request, when every blueprint has registered its routes.
        document = app.extensions["codexweb.openapi"] = build_document(app)
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# Swagger UI styles some elements inline; scripts stay "self" only, as everywhere else.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/docs")
@limiter.exempt
def docs():
    response = current_app.make_response(render_template("api_docs.html"))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
