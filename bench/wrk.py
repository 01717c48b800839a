"""Drive load with wrk (Debian's package) and read its summary.

wrk runs in its own process with the Lua scripts of `bench/lua/`; `report.lua` prints one
`WRK_JSON {...}` line at the end, which is all this module reads (no parsing of wrk's text).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"
USER_AGENT = "codexweb-bench/1"


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    seconds: int  # wrk takes whole seconds only
    timeout_seconds: int = 10


@dataclass
class Result:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    status_errors: int
    starved: int = 0
    # Server side, filled in by the caller: CPU time of master + workers per request served.
    server_cpu_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return path


def request_line(method: str, path: str, body: str = "", headers: dict[str, str] | None = None):
    """One line of a `requests.lua` data file."""
    fields = [method, path, body]
    for name, value in {"User-Agent": USER_AGENT, **(headers or {})}.items():
        fields += [name, value]
    if any("\t" in field or "\n" in field for field in fields):
        raise ValueError("request fields must not contain tabs or newlines")
    return "\t".join(fields)


def run(
    url: str,
    script: str,
    data_file: Path,
    load: Load,
    extra_args: list[str] | None = None,
    drain_url: str | None = None,
) -> Result:
    """Run wrk once against `url`, wait for the server to drain, and return the summary."""
    command = [
        wrk_path(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{max(1, int(load.seconds))}s",
        f"--timeout={load.timeout_seconds}s",
        "-s",
        script,
        url,
        "--",
        str(data_file),
        *(extra_args or []),
    ]
    completed = subprocess.run(
        command,
        cwd=LUA_DIR,
        capture_output=True,
        text=True,
        timeout=load.seconds + load.timeout_seconds + 30,
    )
    result = parse(completed.stdout, completed.stderr, completed.returncode)
    drain(drain_url or url)
    return result


def drain(url: str, timeout: float = 120) -> None:
    """Wait until the server has answered everything wrk left queued when it stopped.

    wrk stops on time, but the requests it had sent wait in the listen backlog; gunicorn's sync
    workers take connections in order, so once a fresh request is answered the backlog is gone
    and the next measurement starts on an idle server.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                response.read()
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> Result:
    summary = None
    starved = 0
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            summary = json.loads(line.removeprefix("WRK_JSON "))
        elif line.startswith("WRK_STARVED "):
            starved = int(line.split()[1])
    if summary is None:
        raise RuntimeError(f"wrk printed no summary (exit {returncode}):\n{stdout}\n{stderr}")
    seconds = summary["duration_us"] / 1e6
    errors = summary["errors"]
    latency = summary["latency_us"]
    return Result(
        requests=summary["requests"],
        seconds=seconds,
        rps=summary["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=sum(errors.values()),
        status_errors=errors["status"],
        starved=starved,
    )
