"""A stand-in OpenAI-compatible model server on loopback, for the ChatKit runtime's tests.

A real HTTP server (threaded `http.server`), so the Agents SDK reaches it through its own
OpenAI client: `POST /v1/chat/completions` with `stream: true` answers Server-Sent Events of
Chat Completions chunks (`data: {chunk}` … `data: [DONE]`), the reply split into words.
It records every request body (to check what the model was sent) and misbehaves on demand:
`fail_next()` answers 500, `hang_next()` sends nothing until the test ends, and
`word_delay` streams slowly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stand-in-model"


@dataclass
class ModelServer:
    reply: str = "Hello from the stand-in model, streaming word by word."
    word_delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: list[str] = field(default_factory=list)
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

    def hang_next(self, times: int = 1) -> None:
        with self._lock:
            self._failures.extend(["hang"] * times)

    def next_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def hang(self) -> None:
        self._released.wait(120)


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    model: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            return self._answer(404, {"error": {"message": "not found", "type": "invalid"}})
        self.model.record(body)
        failure = self.model.next_failure()
        if failure == "fail":
            return self._answer(500, {"error": {"message": "model crashed", "type": "server"}})
        if failure == "hang":
            self.model.hang()
            return None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            for index, word in enumerate(self.model.reply.split(" ")):
                if self.model.word_delay:
                    time.sleep(self.model.word_delay)
                self.wfile.write(chunk({"content": word if index == 0 else f" {word}"}))
                self.wfile.flush()
            self.wfile.write(chunk({}, "stop"))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the runtime hung up (timeout, client gone)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
