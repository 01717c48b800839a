"""Real servers for tests: codexweb under gunicorn on a free loopback port.

`serve_gunicorn(tmp_path, workers=2, env={...})` starts `gunicorn -c gunicorn.conf.py wsgi:app`
from the repository with its own instance folder, waits until `/healthz` answers, yields the
base URL and stops the server (SIGTERM, then SIGKILL) afterwards. The server's output is kept
in `<tmp_path>/gunicorn.log` and printed when the server fails to start.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    instance_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def codexweb_env(instance_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a codexweb process: its own instance folder, quiet mail, test secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CODEXWEB_", "GUNICORN_"))
    }
    env.update(
        {
            "CODEXWEB_INSTANCE_PATH": str(instance_path),
            "CODEXWEB_SECRET_KEY": "test-secret-key-for-real-servers",
            "CODEXWEB_MAIL_BACKEND": "file",
            "CODEXWEB_PUBLIC_BASE_URL": "http://127.0.0.1",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update(extra or {})
    return env


def migrate(env: dict[str, str]) -> None:
    """`flask --app codexweb db upgrade` in that environment, as an operator would run it."""
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "db", "upgrade"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )


@contextmanager
def serve_gunicorn(
    tmp_path: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    instance = tmp_path / "server-instance"
    instance.mkdir(parents=True, exist_ok=True)
    full_env = codexweb_env(instance, env)
    migrate(full_env)
    # A caller that must know the URL first (e.g. to register it at an OpenID provider)
    # picks the port itself.
    port = port or free_port()
    full_env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    full_env["GUNICORN_WORKERS"] = str(workers)
    log_path = tmp_path / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", *(args or []), "wsgi:app"],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, instance, full_env)
    try:
        try:
            wait_for_http(server.url + "/healthz", process=process)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- gunicorn log ---\n{server.log()}") from error
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def spread_over_workers(
    url: str,
    path: str | list[RawRequest],
    *,
    workers: int,
    rounds: int,
    headers: dict[str, str] | None = None,
) -> list[RawResponse]:
    """Send requests `workers` at a time, each in a different sync worker, all at once.

    A sync worker that has accepted a connection blocks reading it until the request is
    complete. Each round opens one connection per worker and sends all but the end of each
    request, so no worker can take two; then it completes them together, so they run
    concurrently. Without this a cheap request is often served by whichever worker is idle
    first, i.e. always the same one.

    `path` is a GET path, or a list of `RawRequest`s sent in order, `workers` per round.
    """
    if isinstance(path, str):
        requests = [RawRequest("GET", path, headers=headers)] * (workers * rounds)
    else:
        requests = path
    host, port = url.removeprefix("http://").split(":")
    responses: list[RawResponse] = []
    for start in range(0, len(requests), workers):
        batch = requests[start : start + workers]
        sockets = [socket.create_connection((host, int(port)), timeout=60) for _ in batch]
        try:
            for sock, request in zip(sockets, batch, strict=True):
                sock.sendall(request.head(host))
            # Every worker takes its connection: sure for sync workers once the accept queue
            # is empty, likely for gthread ones given the pause (they may take two).
            time.sleep(0.2)
            wait_until_accepted(int(port))
            for sock, request in zip(sockets, batch, strict=True):
                sock.sendall(b"\r\n" + request.body)
            for sock in sockets:
                reply = http.client.HTTPResponse(sock)
                reply.begin()
                responses.append(RawResponse(reply.status, dict(reply.getheaders()), reply.read()))
        finally:
            for sock in sockets:
                sock.close()
    return responses


def wait_until_accepted(port: int, timeout: float = 10.0) -> None:
    """Wait until the server listening on `port` has accepted every connection made to it.

    A fixed pause is not enough on a busy machine: a worker that has not yet accepted its
    connection when the requests complete lets another, already done with its own, take it.
    Linux shows a listening socket's accept queue in /proc/net/tcp (rx_queue of its LISTEN
    row); elsewhere this returns at once, and the caller's own pause is all there is.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backlog = accept_backlog(port)
        if backlog is None or backlog == 0:
            return
        time.sleep(0.005)
    raise TimeoutError(f"the server on port {port} left connections unaccepted for {timeout} s")


def accept_backlog(port: int) -> int | None:
    """Connections waiting in the accept queue of 127.0.0.1:`port`, or None if unknown."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    listening = f"0100007F:{port:04X}"
    for row in table:
        fields = row.split()
        if fields[1] == listening and fields[3] == "0A":  # 0A: TCP_LISTEN
            return int(fields[4].split(":")[1], 16)
    return None


@dataclass
class RawRequest:
    method: str
    path: str
    json: object = None
    headers: dict[str, str] | None = None

    @property
    def body(self) -> bytes:
        return b"" if self.json is None else json.dumps(self.json).encode()

    def head(self, host: str) -> bytes:
        """Request line and headers, without the blank line that ends them."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (self.headers or {}).items()]
        if self.json is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
