"""Where a path's time goes: py-spy samples both gunicorn workers during one measurement.

`python -m bench.run --profile token,current` adds one profiled measurement per scenario after
the rounds (its req/s is lower: sampling stops the workers briefly) and reports:

- **self time by package**: the leaf frame of each sample, grouped (sqlalchemy, the database
  driver, flask/werkzeug, jinja2, joserfc/cryptography, logging, flask_limiter, gunicorn, …);
- **inclusive time of the hottest functions**: each function counted once per sample it is on
  the stack of, so `mint_chatkit_token` includes the queries it runs.

Only samples taken while a worker handles a request count (the stack holds gunicorn's
`SyncWorker.handle` or `ThreadWorker.handle`): the master, limiter timer threads and idle
waits are left out. Only the thread holding the GIL is sampled (`--gil`), so threads waiting
their turn at the request gate or for the GIL do not count: the profile is of CPU, less the
work done with the GIL released (inside `sqlite3_step` or libpq: the database engine's own).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGES = [
    ("codexweb", "codexweb/"),
    ("sqlalchemy", "sqlalchemy/"),
    ("flask_sqlalchemy", "flask_sqlalchemy/"),
    ("sqlite3 / psycopg", "sqlite3/"),
    ("sqlite3 / psycopg", "psycopg/"),
    ("flask_limiter / limits", "flask_limiter/"),
    ("flask_limiter / limits", "limits/"),
    ("flask_login", "flask_login/"),
    ("flask_wtf", "flask_wtf/"),
    ("jinja2 / markupsafe", "jinja2/"),
    ("jinja2 / markupsafe", "markupsafe/"),
    ("joserfc / cryptography", "joserfc/"),
    ("joserfc / cryptography", "cryptography/"),
    ("itsdangerous", "itsdangerous/"),
    ("werkzeug", "werkzeug/"),
    ("flask", "flask/"),
    ("pydantic", "pydantic"),
    ("gunicorn", "gunicorn/"),
    ("logging / json", "logging/"),
    ("logging / json", "json/"),
    ("redis", "redis/"),
]
# The frame a worker handles a request under: sync workers and gthread workers.
REQUEST_FRAMES = {"SyncWorker.handle", "ThreadWorker.handle"}
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass
class Samples:
    path: Path


@contextmanager
def sampling(pid: int, rate: int = 200) -> Iterator[Samples]:
    """Sample `pid` and its children (the gunicorn master and its workers) until exit."""
    output = Path(tempfile.mkstemp(prefix="codexweb-profile-", suffix=".txt")[1])
    command = [py_spy(), "record", "--pid", str(pid)]
    command += ["--subprocesses", "--gil", "--format", "raw", "--rate", str(rate)]
    command += ["--output", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)  # py-spy attaches to every process first
    try:
        yield Samples(output)
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
        if process.returncode not in (0, -signal.SIGINT) and not output.stat().st_size:
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')}")


def py_spy() -> str:
    """py-spy from the bench's virtualenv, installed from PyPI on first use."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + ["py-spy"],
            check=True,
        )
    return str(spy)


def parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["function"], match["file"]


def package_of(file: str) -> str:
    for name, marker in PACKAGES:
        if marker in file:
            return name
    return "other (stdlib, interpreter)"


def summarise(path: Path, top: int = 25) -> dict:
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(frame) for frame in stack.split(";")]
        frames = [(function, file) for function, file in frames if file]
        if not any(function in REQUEST_FRAMES for function, _ in frames):
            continue
        total += count
        by_package[package_of(frames[-1][1])] += count
        seen = set()
        for function, file in frames:
            key = f"{function} ({_short(file)})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
    return {
        "samples": total,
        "self_by_package": {
            name: round(100 * count / total, 1) for name, count in by_package.most_common()
        }
        if total
        else {},
        # Frames on (nearly) every stack are the worker's own loop: they tell nothing.
        "inclusive_top": [
            {"function": key, "percent": round(100 * count / total, 1)}
            for key, count in inclusive.most_common(top + 20)
            if count < 0.98 * total
        ][:top]
        if total
        else [],
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file.split("/wt/", 1)[-1]


def markdown(label: str, summary: dict) -> str:
    lines = [f"#### Profile: {label} ({summary['samples']} samples)", ""]
    lines += ["| self time by package | % |", "| --- | ---: |"]
    lines += [f"| {name} | {percent} |" for name, percent in summary["self_by_package"].items()]
    lines += ["", "| inclusive (function, file) | % |", "| --- | ---: |"]
    lines += [f"| `{row['function']}` | {row['percent']} |" for row in summary["inclusive_top"]]
    return "\n".join(lines) + "\n"
