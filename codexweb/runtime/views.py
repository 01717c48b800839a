"""`POST /chatkit`: the HTTP side of the runtime (CONTRACT §4b).

HTTP only: who is calling (the ChatKit token), the limits that must refuse a message before
the SDK stores it, and the serving of the SDK's answer. The SDK is async and Flask is WSGI:
each request gets its own small event loop, run in the request's thread, and a streamed
answer is a plain generator over that loop (`stream_with_context`), so the Store uses
Flask-SQLAlchemy's session and the app context as any view does, and one slow conversation
holds one worker thread, never another conversation (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, request, stream_with_context

from ..errors import Problem, invalid_request
from ..extensions import limiter
from ..ratelimit import bearer_token
from .access import AccessRefused, Caller, caller_from_token

bp = Blueprint("runtime", __name__)

# The requests that carry a new user message: the ones whose length is checked.
MESSAGE_REQUESTS = frozenset({"threads.create", "threads.add_user_message"})
# The requests that run the agent, each a call to the model: the per-session limit counts
# them all. A retry or a tool's output costs as much as a new message.
AGENT_REQUESTS = MESSAGE_REQUESTS | {
    "threads.retry_after_item",
    "threads.add_client_tool_output",
    "threads.add_structured_input",
}
# The requests the SDK refuses with `ValueError` when the thread cannot take them now
# (`server.SdkRefused`): a 422 with the SDK's reason. Any other request's ValueError is a
# fault of ours and stays a 500, with its traceback logged.
THREAD_STATE_REQUESTS = frozenset(
    {
        "threads.retry_after_item",
        "threads.add_client_tool_output",
        "threads.add_structured_input",
        "items.feedback",
    }
)
# Protocol features this server does not offer (no attachment store, no dictation, no widget
# actions): refused up front with a clear answer instead of failing inside the SDK.
UNSUPPORTED_REQUESTS = frozenset(
    {
        "attachments.create",
        "attachments.delete",
        "input.transcribe",
        "threads.custom_action",
        "threads.sync_custom_action",
    }
)


def supported_request_types() -> list[str]:
    """The protocol's request types this server answers: the SDK's own, less the unsupported
    (for the OpenAPI document). Read from the SDK, which loads slowly: call it lazily."""
    from typing import get_args

    from chatkit.types import ChatKitReq

    requests = get_args(get_args(ChatKitReq)[0])
    kinds = {get_args(model.model_fields["type"].annotation)[0] for model in requests}
    return sorted(kinds - UNSUPPORTED_REQUESTS)


# Who is calling --------------------------------------------------------------------------


def current_caller() -> Caller:
    """The caller of this request, resolved once (the limit's key needs it before the view)."""
    if "chatkit_caller" not in g:
        try:
            g.chatkit_caller = caller_from_token(bearer_token())
        except AccessRefused as refused:
            g.chatkit_caller = refused
    if isinstance(g.chatkit_caller, AccessRefused):
        refused = g.chatkit_caller
        raise Problem(
            401, refused.code, refused.detail, headers={"WWW-Authenticate": _challenge(refused)}
        )
    return g.chatkit_caller


def _challenge(refused: AccessRefused) -> str:
    if refused.code == "authentication_required":
        return "Bearer"
    return 'Bearer error="invalid_token"'


# What is asked ---------------------------------------------------------------------------


def protocol_request() -> dict[str, Any]:
    """The request body as JSON (the SDK validates it fully); {} when it is not JSON."""
    if "chatkit_request" not in g:
        try:
            body = json.loads(request.get_data(cache=True) or b"null")
        except ValueError:
            body = None
        g.chatkit_request = body if isinstance(body, dict) else {}
    return g.chatkit_request


def request_type() -> str | None:
    """The request's `type`, or None when it has none that is a string (the SDK then refuses
    the body; until then it must not reach a set lookup, where a JSON object fails)."""
    kind = protocol_request().get("type")
    return kind if isinstance(kind, str) else None


def is_new_message() -> bool:
    return request_type() in MESSAGE_REQUESTS


def runs_the_agent() -> bool:
    return request_type() in AGENT_REQUESTS


def new_message() -> dict[str, Any]:
    """The new message of a request that carries one (`params.input`), else {}."""
    params = protocol_request().get("params") if is_new_message() else None
    message = params.get("input") if isinstance(params, dict) else None
    return message if isinstance(message, dict) else {}


def new_message_chars() -> int:
    """The characters of the new message the model will read: its text parts and the text it
    quotes (both are stored and sent to the model)."""
    message = new_message()
    content = message.get("content")
    parts = content if isinstance(content, list) else []
    quoted = message.get("quoted_text")
    return sum(
        len(part["text"])
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ) + (len(quoted) if isinstance(quoted, str) else 0)


# Limits ----------------------------------------------------------------------------------


def _message_limit() -> str:
    return f"{int(current_app.config['CHATKIT_MESSAGES_PER_MINUTE'])}/minute"


def _session_key() -> str:
    try:
        return f"chatkit-session:{current_caller().context.session_id}"
    except Problem:
        return f"chatkit-refused:{request.remote_addr}"


def _not_counted() -> bool:
    """Only requests of a valid caller that run the agent count against the session's budget."""
    if not runs_the_agent():
        return True
    try:
        current_caller()
    except Problem:
        return True  # the view answers 401
    return False


def _accepted(response: Response) -> bool:
    """A request the view refused (too long, nothing to retry: 4xx) ran no agent: not counted."""
    return response.status_code < 400


message_limit = limiter.limit(
    _message_limit,
    key_func=_session_key,
    exempt_when=_not_counted,
    methods=["POST"],
    deduct_when=_accepted,
)


def check_supported() -> None:
    kind = request_type()
    if kind in UNSUPPORTED_REQUESTS:
        raise invalid_request(
            [{"field": "type", "message": f"{kind} is not supported by this server."}],
            f"This server does not support {kind}.",
        )


def check_no_attachments() -> None:
    """This server keeps no attachments (`attachments.create` is refused), so a message that
    names some is refused here, before the SDK stores its thread, not halfway through."""
    if new_message().get("attachments"):
        raise invalid_request(
            [{"field": "params.input.attachments", "message": "Not supported by this server."}],
            "This server does not support attachments.",
        )


def check_message_length() -> None:
    maximum = int(current_app.config["CHATKIT_MAX_MESSAGE_CHARS"])
    if new_message_chars() > maximum:
        raise invalid_request(
            [{"field": "params.input", "message": f"At most {maximum} characters."}],
            f"The message is too long: at most {maximum} characters.",
        )


# The endpoint ---------------------------------------------------------------------------


@bp.post("/chatkit")
@message_limit
def chatkit():
    caller = current_caller()
    check_supported()
    check_no_attachments()
    check_message_length()
    # The SDKs take seconds to import: only workers that serve /chatkit pay for them (and
    # gunicorn.conf.py warms them up in the background when a worker starts).
    from .server import NotAChatKitRequest, SdkRefused, UnknownObject, answer

    try:
        result = answer(request.get_data(cache=True), caller.context)
    except UnknownObject:
        raise Problem(404, "not_found", "No such thread or item.") from None
    except NotAChatKitRequest:
        raise invalid_request(
            [{"field": "body", "message": "Not a ChatKit request."}],
            "The body is not a ChatKit protocol request.",
        ) from None
    except SdkRefused as refused:
        if request_type() not in THREAD_STATE_REQUESTS:
            raise refused.error from None  # a fault of ours: a 500, its traceback logged
        raise invalid_request(
            [{"field": "params", "message": str(refused)}],
            "The thread cannot take this request now.",
        ) from None
    if isinstance(result, bytes):
        response = Response(result, mimetype="application/json")
    else:
        response = Response(stream_with_context(result), mimetype="text/event-stream")
        # nginx and other proxies: pass each event on as it comes.
        response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response
