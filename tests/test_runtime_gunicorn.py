"""The ChatKit runtime under the production server: `gunicorn -c gunicorn.conf.py wsgi:app`
with its default two workers, the model on the loopback stand-in (tests/model_server.py).

A conversation streams event by event and survives a restart; sixteen conversations
streaming at once leave pages and the API answering.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest

from tests.codex_support import PLACEMENT
from tests.conftest import TEST_PASSWORD
from tests.runtime_support import (
    add_message_request,
    assistant_text,
    create_request,
    done_items,
    model_agents,
    sse_events,
)
from tests.servers import REPO, VENV_BIN, serve_gunicorn

pytestmark = pytest.mark.slow

STREAMS = 16


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"CODEXWEB_DATABASE_URL": request.getfixturevalue("postgres_database")}


def runtime_env(model_server, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "CODEXWEB_CODEX_AGENTS": json.dumps(model_agents(model_server.base_url)),
        "CODEXWEB_RATELIMIT_ENABLED": "false",
        **(extra or {}),
    }


def log_in(server, email: str) -> dict[str, str]:
    """A verified user seeded with the operator's CLI, logged in through the API."""
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "users", "create", email]
        + ["--password", TEST_PASSWORD, "--verified"],
        cwd=REPO,
        env=server.env,
        check=True,
        capture_output=True,
    )
    login = httpx.post(
        server.url + "/api/auth/login", json={"email": email, "password": TEST_PASSWORD}
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def chatkit_headers(server, owner: dict[str, str]) -> tuple[str, dict[str, str]]:
    created = httpx.post(
        server.url + "/api/codex/sessions",
        json={"placement": PLACEMENT, "agent_id": "modelled"},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    minted = httpx.get(
        server.url + "/api/codex/chatkit/token", params={"session_id": session_id}, headers=owner
    )
    return session_id, {"Authorization": f"Bearer {minted.json()['token']}"}


def streamed_chunks(url: str, headers: dict[str, str], body: dict) -> list[bytes]:
    """The response body as the network delivered it, chunk by chunk."""
    with httpx.stream("POST", url + "/chatkit", json=body, headers=headers, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        return list(reply.iter_raw())


def test_a_conversation_streams_persists_and_survives_a_restart(
    tmp_path, model_server, database_env
):
    model_server.word_delay = 0.02
    env = runtime_env(model_server, database_env)
    with serve_gunicorn(tmp_path, workers=2, env=env) as server:
        owner = log_in(server, "talker@example.com")
        session_id, token = chatkit_headers(server, owner)
        chunks = streamed_chunks(server.url, token, create_request("Hello over gunicorn"))
        # The reply arrived in pieces as the model produced it, not as one buffered body.
        assert len(chunks) > 5
        events = sse_events(b"".join(chunks).decode())
        thread_id = events[0]["thread"]["id"]
        assert assistant_text(done_items(events, "assistant_message")[0]) == model_server.reply
        follow_up = httpx.post(
            server.url + "/chatkit",
            json=add_message_request(thread_id, "And again"),
            headers=token,
            timeout=60,
        )
        assert done_items(sse_events(follow_up.text), "assistant_message")

    with serve_gunicorn(tmp_path, workers=2, env=env) as restarted:
        transcript = httpx.get(
            f"{restarted.url}/api/codex/sessions/{session_id}/transcript", headers=owner
        ).json()
        assert transcript["thread_id"] == thread_id
        assert [(item["role"], item["text"]) for item in transcript["items"]] == [
            ("user", "Hello over gunicorn"),
            ("assistant", model_server.reply),
            ("user", "And again"),
            ("assistant", model_server.reply),
        ]
        # The token minted before the restart still opens the same thread.
        thread = httpx.post(
            restarted.url + "/chatkit",
            json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
            headers=token,
            # A fresh worker may still be loading the SDKs (seconds on a busy machine).
            timeout=60,
        )
        assert thread.status_code == 200 and len(thread.json()["items"]["data"]) == 4


def test_pages_and_the_api_answer_while_sixteen_conversations_stream(tmp_path, model_server):
    # 40 words at 0.1 s: each reply streams for about four seconds.
    model_server.reply = " ".join(f"word{n}" for n in range(40))
    model_server.word_delay = 0.1
    with serve_gunicorn(tmp_path, workers=2, env=runtime_env(model_server)) as server:
        owner = log_in(server, "busy@example.com")
        _session_id, token = chatkit_headers(server, owner)
        started = threading.Barrier(STREAMS + 1)
        finished: list[float] = []
        failures: list[str] = []

        def converse(n: int) -> None:
            started.wait()
            try:
                events = sse_events(
                    b"".join(streamed_chunks(server.url, token, create_request(f"n{n}"))).decode()
                )
                assert done_items(events, "assistant_message")
            except Exception as error:  # reported below, with the others
                failures.append(repr(error))
            finished.append(time.monotonic())

        threads = [threading.Thread(target=converse, args=(n,)) for n in range(STREAMS)]
        for thread in threads:
            thread.start()
        started.wait()
        # Wait until every conversation is streaming at the model, then ask for pages.
        deadline = time.monotonic() + 30
        while len(model_server.chat_requests()) < STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(model_server.chat_requests()) == STREAMS
        answers = []
        for path, headers in (
            ("/healthz", {}),
            ("/login", {}),
            ("/api/codex/sessions", owner),
            ("/api/codex/agents", owner),
        ):
            response = httpx.get(server.url + path, headers=headers, timeout=30)
            answers.append((path, response.status_code, time.monotonic()))
        for thread in threads:
            thread.join(60)

    assert failures == []
    assert len(finished) == STREAMS
    assert [(path, status) for path, status, _ in answers] == [
        ("/healthz", 200),
        ("/login", 200),
        ("/api/codex/sessions", 200),
        ("/api/codex/agents", 200),
    ]
    # Behaviour, not a stopwatch: every page answered while all the streams were still open.
    assert max(at for _, _, at in answers) < min(finished)


def test_a_client_that_hangs_up_mid_reply_leaves_no_half_written_answer(tmp_path, model_server):
    model_server.reply = " ".join(f"word{n}" for n in range(60))
    model_server.word_delay = 0.1
    with serve_gunicorn(tmp_path, workers=2, env=runtime_env(model_server)) as server:
        owner = log_in(server, "leaver@example.com")
        _session_id, token = chatkit_headers(server, owner)
        received = b""
        with httpx.stream(
            "POST", server.url + "/chatkit", json=create_request("Bye"), headers=token, timeout=60
        ) as reply:
            for piece in reply.iter_raw():
                received += piece
                if received.count(b"assistant_message.content_part.text_delta") >= 3:
                    break  # and hang up, mid-reply
        thread_id = sse_events(received.decode(errors="replace"))[0]["thread"]["id"]

        def stored_types() -> list[str]:
            items = httpx.post(
                server.url + "/chatkit",
                json={"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}},
                headers=token,
            )
            return [item["type"] for item in items.json()["data"]]

        # Give the server time to notice (its next write fails) and to run past where the
        # reply would have ended; the half-streamed answer is never stored.
        time.sleep(8)
        assert stored_types() == ["user_message"]
        model_server.word_delay = 0
        retried = httpx.post(
            server.url + "/chatkit",
            json=add_message_request(thread_id, "Still there?"),
            headers=token,
            timeout=60,
        )
        assert done_items(sse_events(retried.text), "assistant_message")
        assert stored_types() == ["user_message", "user_message", "assistant_message"]
