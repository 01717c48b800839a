"""A stand-in OpenAI-compatible model server on loopback, for the ChatKit runtime's tests.

A real HTTP server (threaded `http.server`), so the Agents SDK reaches it through its own
OpenAI client, the reply split into words:
- `POST /v1/chat/completions` with `stream: true` answers Server-Sent Events of Chat
  Completions chunks (`data: {chunk}` … `data: [DONE]`);
- `POST /v1/responses` with `stream: true` answers the Responses API's events for one
  assistant message (`response.created` … `response.output_text.delta` … `response.completed`).
Like OpenAI's, it keeps connections open between requests (the streams are chunked) and
counts the connections it accepted. It records every request body (to check what the model
was sent) and misbehaves on demand:
`fail_next()` answers 500, `hang_next()` sends nothing until the test ends,
`close_kept_connection_next()` hangs up on the next request that arrives on a connection it
has answered before (what a server whose idle timeout just fired does), and `word_delay`
streams slowly.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stand-in-model"


@dataclass
class ModelServer:
    reply: str = "Hello from the stand-in model, streaming word by word."
    word_delay: float = 0.0
    # The Responses stream names every message with this id instead of a new one each time.
    reused_item_id: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    _failures: list[str] = field(default_factory=list)
    _close_kept: bool = False
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ModelServer:
        handler = type("Handler", (_Handler,), {"model": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail_next(self, times: int = 1) -> None:
        with self._lock:
            self._failures.extend(["fail"] * times)

    def close_kept_connection_next(self) -> None:
        with self._lock:
            self._close_kept = True

    def closes_kept_connection(self) -> bool:
        with self._lock:
            close, self._close_kept = self._close_kept, False
            return close

    def hang_next(self, times: int = 1) -> None:
        with self._lock:
            self._failures.extend(["hang"] * times)

    def next_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def hang(self) -> None:
        self._released.wait(120)

    def words(self) -> Iterator[str]:
        """The reply's words as streamed, `word_delay` apart."""
        for index, word in enumerate(self.reply.split(" ")):
            if self.word_delay:
                time.sleep(self.word_delay)
            yield word if index == 0 else f" {word}"


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


# The Responses API names every response and item anew, as OpenAI does.
_response_ids = itertools.count(1)


def chat_completion_chunks(model: ModelServer) -> Iterator[bytes]:
    yield chunk({"role": "assistant", "content": ""})
    for word in model.words():
        yield chunk({"content": word})
    yield chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def response_events(model: ModelServer) -> Iterator[bytes]:
    """The Responses API's stream of one assistant message, as OpenAI sends it."""
    sequence = itertools.count()
    text = model.reply
    output_tokens = len(text.split(" "))
    item_id = model.reused_item_id or f"msg_standin{next(_response_ids)}"
    message = {"id": item_id, "type": "message", "role": "assistant"}

    def event(type_: str, **fields: Any) -> bytes:
        body = {"type": type_, "sequence_number": next(sequence), **fields}
        return f"event: {type_}\ndata: {json.dumps(body)}\n\n".encode()

    def response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"resp_standin{next(_response_ids)}",
            "object": "response",
            "created_at": int(time.time()),
            "model": MODEL,
            "status": status,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 10 + output_tokens,
            },
        }

    part = {"type": "output_text", "annotations": [], "logprobs": []}
    at = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    done = {**message, "status": "completed", "content": [{**part, "text": text}]}
    yield event("response.created", response=response("in_progress", []))
    yield event(
        "response.output_item.added",
        output_index=0,
        item={**message, "status": "in_progress", "content": []},
    )
    yield event("response.content_part.added", **at, part={**part, "text": ""})
    for word in model.words():
        yield event("response.output_text.delta", **at, delta=word, logprobs=[])
    yield event("response.output_text.done", **at, text=text, logprobs=[])
    yield event("response.content_part.done", **at, part={**part, "text": text})
    yield event("response.output_item.done", output_index=0, item=done)
    yield event("response.completed", response=response("completed", [done]))


STREAMS = {"/v1/chat/completions": chat_completion_chunks, "/v1/responses": response_events}


class _Handler(BaseHTTPRequestHandler):
    model: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def setup(self) -> None:
        super().setup()
        # As real servers do: an event goes out when written, not after the client's delayed
        # ACK of the one before (about 40 ms on a connection that is kept open).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.model.connected()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.answered = getattr(self, "answered", 0) + 1
        if self.answered > 1 and self.model.closes_kept_connection():
            self.close_connection = True  # no answer: the client sees the connection end
            return None
        stream = STREAMS.get(self.path)
        if stream is None:
            return self._answer(404, {"error": {"message": "not found", "type": "invalid"}})
        self.model.record(body)
        failure = self.model.next_failure()
        if failure == "fail":
            return self._answer(500, {"error": {"message": "model crashed", "type": "server"}})
        if failure == "hang":
            self.model.hang()
            self.close_connection = True
            return None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in stream(self.model):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the runtime hung up (timeout, client gone)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
