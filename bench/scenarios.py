"""What the bench asks of codexweb: one `Scenario` per hot path, with its wrk data and targets.

Every scenario is measured against the baseline (bare Flask, `GET /`) under the same load in
the same round. Scenarios whose endpoint is not on this build are probed once and reported as
skipped with the answer they got, so the harness runs on any branch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from flask import Flask

from .seed import AGENT_ID, OTHER_PLACEMENT, PASSWORD, PLACEMENT, BenchUser, Population
from .wrk import USER_AGENT, request_line

PAGE_USERS = 8  # each logs in through /login once (a password check each)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    script: str = "requests.lua"
    # req/s ratio to bare Flask in the same round, by database (issue 16's targets).
    target_ratio: dict[str, float] | None = None
    scaled: bool = False  # measured on every scale, not only the smallest
    note: str = ""


SCENARIOS = [
    Scenario("healthz", "GET /healthz", note="one SELECT 1"),
    Scenario(
        "current",
        "GET /api/codex/sessions/current",
        target_ratio={"sqlite": 0.45, "postgres": 0.40},
        scaled=True,
        note="Bearer; ?placement=&agent_id=",
    ),
    Scenario(
        "token",
        "GET /api/codex/chatkit/token",
        target_ratio={"sqlite": 0.35, "postgres": 0.30},
        scaled=True,
        note="Bearer; mints a JWT, slides the session",
    ),
    Scenario(
        "cycle",
        "POST /api/codex/sessions + POST …/close",
        script="cycle.lua",
        target_ratio={"sqlite": 0.25, "postgres": 0.20},
        note="Bearer; req/s counts both requests of a cycle",
    ),
    Scenario(
        "page",
        "GET /codex/chatkit (full page)",
        target_ratio={"sqlite": 0.30, "postgres": 0.25},
        note="session cookie",
    ),
    Scenario("login", "POST /api/auth/login", note="one password check per request"),
]
SCENARIO_KEYS = [scenario.key for scenario in SCENARIOS]


def bearer(user: BenchUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


def baseline_lines() -> list[str]:
    return [request_line("GET", "/")]


def healthz_lines(population: Population) -> list[str]:
    return [request_line("GET", "/healthz")]


def current_lines(population: Population) -> list[str]:
    query = urlencode({"placement": PLACEMENT, "agent_id": AGENT_ID})
    return [
        request_line("GET", f"/api/codex/sessions/current?{query}", headers=bearer(user))
        for user in population.api_users
    ]


def token_lines(population: Population) -> list[str]:
    return [
        request_line(
            "GET",
            f"/api/codex/chatkit/token?{urlencode({'session_id': user.session_id})}",
            headers=bearer(user),
        )
        for user in population.api_users
    ]


def login_lines(population: Population) -> list[str]:
    return [
        request_line(
            "POST",
            "/api/auth/login",
            body=f'{{"email": "{user.email}", "password": "{PASSWORD}"}}',
            headers={"Content-Type": "application/json"},
        )
        for user in population.api_users
    ]


def cycle_lines(users: list[BenchUser]) -> list[str]:
    """`cycle.lua` slots: every user twice, once per placement."""
    return [
        f"{user.access_token}\t{placement}\t{AGENT_ID}"
        for user in users
        for placement in (PLACEMENT, OTHER_PLACEMENT)
    ]


def page_lines(cookies: list[str]) -> list[str]:
    return [request_line("GET", "/codex/chatkit", headers={"Cookie": cookie}) for cookie in cookies]


LINE_BUILDERS: dict[str, Callable[[Population], list[str]]] = {
    "healthz": healthz_lines,
    "current": current_lines,
    "token": token_lines,
    "login": login_lines,
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# Probing: is the scenario's endpoint on this build, and does it answer as the bench expects?


class Unavailable(Exception):
    """The scenario cannot run on this build; the message says what was answered."""


def replay(url: str, line: str) -> httpx.Response:
    """Send one `requests.lua` line with httpx (for probes)."""
    method, path, body, *pairs = line.split("\t")
    headers = dict(zip(pairs[::2], pairs[1::2], strict=True))
    return httpx.request(method, url + path, content=body or None, headers=headers, timeout=30)


def probe(url: str, line: str, expected: int = 200) -> None:
    response = replay(url, line)
    if response.status_code != expected:
        method, path = line.split("\t")[:2]
        raise Unavailable(f"{method} {path.split('?')[0]} {_answer(response)}")


def _answer(response: httpx.Response) -> str:
    """`answered 404 not_found`: enough to tell "not on this build" from a real failure."""
    code = ""
    if response.headers.get("Content-Type", "").endswith("json"):
        body = response.json()
        code = f" {body.get('code')}" if isinstance(body, dict) and body.get("code") else ""
    return f"answered {response.status_code}{code}"


def probe_cycle(url: str, user: BenchUser) -> None:
    """One create and close by hand, leaving the user without an active session again."""
    created = httpx.post(
        url + "/api/codex/sessions",
        json={"placement": PLACEMENT, "agent_id": AGENT_ID, "metadata": {"bench_slot": 1}},
        headers={**bearer(user), "User-Agent": USER_AGENT},
        timeout=30,
    )
    if created.status_code != 201:
        raise Unavailable(f"POST /api/codex/sessions {_answer(created)}")
    body = created.json()
    if body.get("metadata") != {"bench_slot": 1}:
        raise Unavailable("the created SESSION does not echo its metadata (cycle.lua needs it)")
    closed = httpx.post(
        f"{url}/api/codex/sessions/{body['session_id']}/close",
        headers={**bearer(user), "User-Agent": USER_AGENT},
        timeout=30,
    )
    if closed.status_code != 200:
        raise Unavailable(f"POST /api/codex/sessions/<id>/close {_answer(closed)}")


# Cookie login for the full page ----------------------------------------------------------

_CSRF_INPUT = re.compile(r"<input[^>]*name=\"csrf_token\"[^>]*>", re.IGNORECASE)
_VALUE = re.compile(r"value=\"([^\"]+)\"")


def page_cookies(url: str, app: Flask, users: list[BenchUser]) -> tuple[list[str], str]:
    """Session cookies for `users` and how they were obtained.

    Logs in through the `/login` page as a browser would (CSRF token from the form), with the
    User-Agent wrk sends, so flask-login's session protection sees the same client. Without a
    login page on this build, signs the cookie flask-login would have set, with the app's key.
    """
    try:
        return [_login_through_page(url, user) for user in users], "logged in through /login"
    except Unavailable:
        return [_signed_cookie(app, user) for user in users], "session cookie signed in-process"


def _login_through_page(url: str, user: BenchUser) -> str:
    with httpx.Client(
        base_url=url, headers={"User-Agent": USER_AGENT}, follow_redirects=False, timeout=30
    ) as client:
        form = client.get("/login")
        field = _CSRF_INPUT.search(form.text) if form.status_code == 200 else None
        token = _VALUE.search(field.group(0)) if field else None
        if token is None:
            raise Unavailable(f"GET /login answered {form.status_code} without a login form")
        answer = client.post(
            "/login",
            data={"email": user.email, "password": PASSWORD, "csrf_token": token.group(1)},
        )
        if answer.status_code not in (302, 303) or not client.cookies:
            raise Unavailable(f"POST /login answered {answer.status_code}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def _signed_cookie(app: Flask, user: BenchUser) -> str:
    from flask_login.utils import _create_identifier

    environ = {"REMOTE_ADDR": "127.0.0.1"}
    with app.test_request_context("/", headers={"User-Agent": USER_AGENT}, environ_base=environ):
        data = {
            "_user_id": user.id,
            "_fresh": True,
            "_id": _create_identifier(),
            "_login_id": user.login_id,
        }
        value = app.session_interface.get_signing_serializer(app).dumps(data)
    return f"{app.config['SESSION_COOKIE_NAME']}={value}"
