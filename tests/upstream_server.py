"""A stand-in for OpenAI's ChatKit sessions API: a real HTTP server on a loopback free port.

It implements the two endpoints codexweb calls, with the checks the real service documents,
and answers with the documented `chatkit.session` object:

- `POST /v1/chatkit/sessions`: `Authorization: Bearer <key>`, `OpenAI-Beta: chatkit_beta=v1`,
  a JSON body `{user, workflow: {id, state_variables?, tracing?, version?}, expires_after?:
  {anchor: "created_at", seconds}, rate_limits?: {max_requests_per_1_minute},
  chatkit_configuration?}`; unknown fields, wrong types and unknown workflows are refused with
  OpenAI's error object `{"error": {"message", "type", "param", "code"}}`.
- `POST /v1/chatkit/sessions/{id}/cancel`: same headers, no body needed; 404 for an unknown id.

It can be told to misbehave for the next N calls of an endpoint (`fail_next`): answer with an
error status and body, with 429 and a Retry-After, slowly (held until released or the server
stops), or by resetting the connection after reading the request.

    with FakeChatKit(api_key="sk-test", workflows={"wf_1"}) as upstream:
        upstream.url            # http://127.0.0.1:<port>
        upstream.created        # the sessions it created, in order
        upstream.requests       # every request it received (method, path, headers, body)
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import free_port

SESSIONS_PATH = "/v1/chatkit/sessions"
DEFAULT_EXPIRES_AFTER = 600
DEFAULT_RATE_LIMIT = 10
CREATE_FIELDS = {"user", "workflow", "expires_after", "rate_limits", "chatkit_configuration"}
WORKFLOW_FIELDS = {"id", "state_variables", "tracing", "version"}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    peer: tuple[str, int]  # the client's address: equal peers mean a reused connection


@dataclass
class Failure:
    """What to do instead of answering normally."""

    mode: str  # "error" | "rate_limit" | "slow" | "reset"
    status: int = 400
    body: Any = None
    retry_after: str | None = None
    release: threading.Event = field(default_factory=threading.Event)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str, code: str | None, param=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, kind="invalid_request_error", code=None, param=param)


class FakeChatKit:
    def __init__(self, *, api_key: str = "sk-test-key", workflows: set[str] | None = None):
        self.api_key = api_key
        self.workflows = set(workflows or {"wf_demo"})
        self.sessions: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.requests: list[Received] = []
        # Grant this lifetime whatever was asked (the real service may clamp what it grants).
        self.lifetime_override: int | None = None
        self._failures: dict[str, deque[Failure]] = {"create": deque(), "cancel": deque()}
        self._held: list[Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeChatKit:
        handler = type("Handler", (_Handler,), {"upstream": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for failure in self._held:
            failure.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeChatKit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Steering ----------------------------------------------------------------------------

    def fail_next(self, endpoint: str, mode: str, *, times: int = 1, **options: Any) -> Failure:
        """Make the next `times` calls of `endpoint` ("create" or "cancel") fail with `mode`."""
        failure = Failure(mode, **options)
        with self._lock:
            self._failures[endpoint].extend([failure] * times)
        if mode == "slow":
            self._held.append(failure)
        return failure

    def expire(self, session_id: str) -> None:
        self.sessions[session_id]["status"] = "expired"

    def calls(self, endpoint: str) -> list[Received]:
        if endpoint == "create":
            return [r for r in self.requests if r.path == SESSIONS_PATH]
        return [r for r in self.requests if r.path.endswith("/cancel")]

    def _next_failure(self, endpoint: str) -> Failure | None:
        with self._lock:
            queue = self._failures[endpoint]
            return queue.popleft() if queue else None

    # The API -----------------------------------------------------------------------------

    def check_headers(self, headers: dict[str, str]) -> None:
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or authorization[7:] != self.api_key:
            offered = authorization[7:]
            masked = f"{offered[:3]}***{offered[-4:]}" if len(offered) > 8 else "***"
            raise ApiError(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                kind="invalid_request_error",
                code="invalid_api_key",
            )
        if headers.get("openai-beta") != "chatkit_beta=v1":
            raise invalid("ChatKit requires the header 'OpenAI-Beta: chatkit_beta=v1'.")

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        unknown = set(body) - CREATE_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise invalid(f"Unrecognized request argument supplied: {name}", name)
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise invalid("'user' must be a non-empty string.", "user")
        workflow = self._checked_workflow(body.get("workflow"))
        seconds = self._checked_expires_after(body.get("expires_after"))
        per_minute = self._checked_rate_limits(body.get("rate_limits"))
        seconds = self.lifetime_override or seconds
        now = int(time.time())
        session = {
            "id": f"cksess_{secrets.token_hex(16)}",
            "object": "chatkit.session",
            "client_secret": f"ek_{secrets.token_urlsafe(32)}",
            "expires_at": now + seconds,
            "status": "active",
            "user": user,
            "workflow": {
                "id": workflow["id"],
                "state_variables": workflow.get("state_variables"),
                "tracing": {"enabled": workflow.get("tracing", {}).get("enabled", True)},
                "version": workflow.get("version"),
            },
            "rate_limits": {"max_requests_per_1_minute": per_minute},
            "max_requests_per_1_minute": per_minute,
            "chatkit_configuration": {
                "automatic_thread_titling": {"enabled": True},
                "file_upload": {"enabled": False, "max_file_size": 512, "max_files": 10},
                "history": {"enabled": True, "recent_threads": None},
            },
        }
        with self._lock:
            self.sessions[session["id"]] = session
            self.created.append(session)
        return session

    def cancel(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None:
                raise ApiError(
                    404,
                    f"No session found with id '{session_id}'.",
                    kind="invalid_request_error",
                    code="not_found",
                )
            if session["status"] == "active":
                session["status"] = "cancelled"
            self.cancelled.append(session_id)
            return session

    def _checked_workflow(self, workflow: Any) -> dict[str, Any]:
        if not isinstance(workflow, dict) or not isinstance(workflow.get("id"), str):
            raise invalid("'workflow.id' is required.", "workflow.id")
        unknown = set(workflow) - WORKFLOW_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise invalid(f"Unrecognized argument: workflow.{name}", f"workflow.{name}")
        variables = workflow.get("state_variables", {})
        if not isinstance(variables, dict) or any(
            not isinstance(key, str)
            or len(key) > 64
            or not isinstance(value, str | int | float | bool)
            for key, value in variables.items()
        ):
            raise invalid(
                "'workflow.state_variables' must map keys of at most 64 characters to "
                "strings, numbers or booleans.",
                "workflow.state_variables",
            )
        if workflow["id"] not in self.workflows:
            raise ApiError(
                404,
                f"Workflow with id '{workflow['id']}' not found.",
                kind="invalid_request_error",
                code="workflow_not_found",
                param="workflow.id",
            )
        return workflow

    def _checked_expires_after(self, expires_after: Any) -> int:
        if expires_after is None:
            return DEFAULT_EXPIRES_AFTER
        if (
            not isinstance(expires_after, dict)
            or set(expires_after) != {"anchor", "seconds"}
            or expires_after["anchor"] != "created_at"
            or not _positive_int(expires_after["seconds"])
        ):
            raise invalid(
                '\'expires_after\' must be {"anchor": "created_at", "seconds": <int > 0>}.',
                "expires_after",
            )
        return expires_after["seconds"]

    def _checked_rate_limits(self, rate_limits: Any) -> int:
        if rate_limits is None:
            return DEFAULT_RATE_LIMIT
        if (
            not isinstance(rate_limits, dict)
            or set(rate_limits) - {"max_requests_per_1_minute"}
            or not _positive_int(rate_limits.get("max_requests_per_1_minute", 1))
        ):
            raise invalid(
                "'rate_limits.max_requests_per_1_minute' must be a positive integer.",
                "rate_limits",
            )
        return rate_limits.get("max_requests_per_1_minute", DEFAULT_RATE_LIMIT)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class _Handler(BaseHTTPRequestHandler):
    upstream: FakeChatKit
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service: the client pools

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        self.upstream.requests.append(
            Received("POST", self.path, headers, body, self.client_address)
        )

        endpoint = self._endpoint()
        if endpoint is None:
            return self._answer(404, {"error": {"message": "Not found", "type": "not_found"}})
        failure = self.upstream._next_failure(endpoint[0])
        if failure is not None and self._misbehave(failure):
            return None
        try:
            self.upstream.check_headers(headers)
            if body is ValueError:
                raise invalid("We could not parse the JSON body of your request.")
            if endpoint[0] == "create":
                result = self.upstream.create(body)
            else:
                result = self.upstream.cancel(endpoint[1])
        except ApiError as error:
            return self._answer(error.status, error.body)
        return self._answer(200, result)

    def _endpoint(self) -> tuple[str, str] | None:
        if self.path == SESSIONS_PATH:
            return ("create", "")
        prefix = SESSIONS_PATH + "/"
        if self.path.startswith(prefix) and self.path.endswith("/cancel"):
            session_id = self.path[len(prefix) : -len("/cancel")]
            if session_id and "/" not in session_id:
                return ("cancel", session_id)
        return None

    def _misbehave(self, failure: Failure) -> bool:
        """Act out `failure`; True when the normal answer must not follow."""
        if failure.mode == "error":
            self._answer(failure.status, failure.body)
            return True
        if failure.mode == "rate_limit":
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            body = {
                "error": {
                    "message": "Rate limit reached for requests.",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
            self._answer(429, body, headers)
            return True
        if failure.mode == "slow":
            failure.release.wait(timeout=30)
            return False
        if failure.mode == "reset":
            # SO_LINGER 0: close() sends RST, so the client sees "connection reset by peer"
            # after its request was received: exactly the case that must not be retried.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return True
        raise ValueError(f"unknown failure mode {failure.mode!r}")

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{secrets.token_hex(8)}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
