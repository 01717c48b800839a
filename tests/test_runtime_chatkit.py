"""The ChatKit runtime (`POST /chatkit`, CONTRACT §4b) through Flask's test client: the
protocol, the store behind it, who may call, the limits and the failures of a model.

The model is the stand-in server of tests/model_server.py, a real HTTP server on loopback
that the Agents SDK reaches through its own OpenAI client.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import uuid
import warnings
from datetime import datetime

import pytest
from agents import Runner
from chatkit.store import NotFoundError
from chatkit.types import SDKHiddenContextItem
from joserfc import jwt
from sqlalchemy import func, select

from codexweb.codex.keys import key_store, rotate_keys, verifying_keys
from codexweb.extensions import db
from codexweb.models import ChatKitItem, ChatKitThread
from codexweb.runtime.access import caller_from_token
from codexweb.runtime.agents import ModelClients
from codexweb.runtime.loops import KeptLoop, LoopPool
from codexweb.runtime.server import CodexChatKitServer
from codexweb.runtime.store import SessionStore
from tests.codex_support import new_session
from tests.conftest import TEST_PASSWORD
from tests.runtime_support import (
    add_message_request,
    assistant_text,
    chatkit_token,
    create_request,
    deltas,
    done_items,
    model_agents,
    sse_events,
)
from tests.test_query_budget import recorded_statements

DEMO_PREFIX = "This is Demo agent, codexweb's offline demo agent (no model is configured)."


@pytest.fixture
def owner(user, auth_headers):
    return auth_headers(user)


@pytest.fixture
def session(client, owner):
    return new_session(client, owner, context={"repo": "acme/app"})


@pytest.fixture
def token(client, owner, session):
    return chatkit_token(client, owner, session["session_id"])


def post(client, headers, body):
    return client.post("/chatkit", json=body, headers=headers)


def stream(client, headers, body) -> list[dict]:
    response = post(client, headers, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return sse_events(response.get_data(as_text=True))


def call(client, headers, type_: str, **params) -> dict:
    response = post(client, headers, {"type": type_, "params": params})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code
    return body


def stored(app) -> tuple[int, int]:
    with app.app_context():
        threads = db.session.scalar(select(func.count()).select_from(ChatKitThread))
        items = db.session.scalar(select(func.count()).select_from(ChatKitItem))
        return threads, items


# The demo agent --------------------------------------------------------------------------


def metric_value(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (the runtime's metrics, CONTRACT §8)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_demo_agent_streams_a_reply_word_by_word_and_it_persists(
    client, owner, session, token, events
):
    first_tokens_before = metric_value("codexweb_chatkit_model_first_token_seconds_count")
    events_seen = stream(client, token, create_request("Where am I?"))
    assert (
        metric_value("codexweb_chatkit_model_first_token_seconds_count") == first_tokens_before + 1
    )
    assert metric_value("codexweb_chatkit_streams_active") == 0

    assert [event["type"] for event in events_seen[:3]] == [
        "thread.created",
        "thread.item.done",
        "stream_options",
    ]
    thread_id = events_seen[0]["thread"]["id"]
    words = deltas(events_seen)
    assert len(words) > 5
    reply = f"{DEMO_PREFIX} You said: Where am I?"
    assert "".join(words) == reply
    [answer] = done_items(events_seen, "assistant_message")
    assert assistant_text(answer) == reply

    # The session now points at the thread, so a reload resumes it.
    fetched = client.get(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    assert fetched.get_json()["thread_id"] == thread_id
    current = client.get("/api/codex/sessions/current", headers=owner)
    assert current.get_json()["thread_id"] == thread_id

    thread = call(client, token, "threads.get_by_id", thread_id=thread_id)
    assert [item["type"] for item in thread["items"]["data"]] == [
        "user_message",
        "assistant_message",
    ]
    listed = call(client, token, "threads.list")
    assert [entry["id"] for entry in listed["data"]] == [thread_id]

    assert [e["event"] for e in events if e["event"].startswith("chatkit.")] == [
        "chatkit.thread.created",
        "chatkit.message.received",
        "chatkit.response.completed",
    ]
    assert events.named("chatkit.message.received")[0]["chars"] == len("Where am I?")
    completed = events.named("chatkit.response.completed")[0]
    assert completed["output_chars"] == len(reply)
    assert completed["first_token_ms"] >= 0 and completed["duration_ms"] >= 0
    assert "Where am I" not in "\n".join(events.lines())


def test_the_runtime_answers_from_a_thread_that_already_runs_an_event_loop(client, token):
    """Playwright's sync API (or an async host) leaves a loop running in the calling thread
    while synchronous code runs there; asyncio allows no second loop in that thread."""
    outer = asyncio.new_event_loop()
    asyncio._set_running_loop(outer)  # what such a host does, as asyncio's own API
    try:
        events_seen = stream(client, token, create_request("inside"))
    finally:
        asyncio._set_running_loop(None)
        outer.close()
    assert "".join(deltas(events_seen)) == f"{DEMO_PREFIX} You said: inside"


def test_items_list_pages_in_both_orders(client, token):
    first = stream(client, token, create_request("one"))
    thread_id = first[0]["thread"]["id"]
    stream(client, token, add_message_request(thread_id, "two"))

    page = call(client, token, "items.list", thread_id=thread_id, limit=3, order="asc")
    assert page["has_more"] is True
    assert [item["type"] for item in page["data"]] == [
        "user_message",
        "assistant_message",
        "user_message",
    ]
    rest = call(
        client, token, "items.list", thread_id=thread_id, limit=3, order="asc", after=page["after"]
    )
    assert rest["has_more"] is False
    assert [item["type"] for item in rest["data"]] == ["assistant_message"]

    newest = call(client, token, "items.list", thread_id=thread_id, limit=1, order="desc")
    assert newest["data"][0]["id"] == rest["data"][0]["id"]


def test_the_store_rereads_a_threads_newest_items_once_it_wrote_to_it(app, client, token):
    """A turn reads the newest items twice (the agent's history, then the SDK's last two):
    the second comes from the first, with no query, but never after a write to the thread."""
    thread_id = stream(client, token, create_request("one"))[0]["thread"]["id"]

    async def turn(store: SessionStore, context, statements: list) -> None:
        history = await store.load_thread_items(thread_id, None, 100, "desc", context)
        assert [item.type for item in history.data] == ["assistant_message", "user_message"]
        statements.clear()
        last_two = await store.load_thread_items(thread_id, None, 2, "desc", context)
        newest = await store.load_thread_items(thread_id, None, 1, "desc", context)
        assert statements == []
        assert (last_two.data, last_two.has_more) == (history.data, False)
        assert (newest.data, newest.has_more, newest.after) == (
            history.data[:1],
            True,
            history.data[0].id,
        )
        note = SDKHiddenContextItem(
            id="sdk_note_1", thread_id=thread_id, created_at=datetime.now(), content="note"
        )
        await store.add_thread_item(thread_id, note, context)
        after_write = await store.load_thread_items(thread_id, None, 2, "desc", context)
        assert [item.id for item in after_write.data] == ["sdk_note_1", history.data[0].id]
        # A retry deletes the replies after the message it answers again.
        await store.delete_thread_item(thread_id, "sdk_note_1", context)
        after_delete = await store.load_thread_items(thread_id, None, 1, "desc", context)
        assert (after_delete.data, after_delete.has_more) == (history.data[:1], True)
        # That read of one item, when the thread has more, cannot answer a read of two.
        statements.clear()
        last_two = await store.load_thread_items(thread_id, None, 2, "desc", context)
        assert (last_two.data, len(statements)) == (history.data, 1)

    with app.test_request_context(), recorded_statements(app) as statements:
        caller = caller_from_token(token["Authorization"].removeprefix("Bearer "))
        asyncio.run(turn(SessionStore(), caller.context, statements))


@pytest.mark.parametrize("host_loop", [False, True], ids=["own loop", "under a running loop"])
def test_a_reply_the_client_walks_away_from_leaves_a_note_not_half_an_answer(
    client, token, app, host_loop
):
    """The client went away mid-reply: no half-written answer is kept, only the note that
    tells the next reply not to finish the one that was cut. Also where the request's loop
    runs in a helper thread (a host that runs a loop of its own)."""
    outer = asyncio.new_event_loop()
    if host_loop:
        asyncio._set_running_loop(outer)
    try:
        response = client.post(
            "/chatkit", json=create_request("hello"), headers=token, buffered=False
        )
        chunks = iter(response.response)
        while b"assistant_message" not in next(chunks):  # the reply has begun
            pass
        response.close()
    finally:
        asyncio._set_running_loop(None)
        outer.close()
    with app.app_context():
        kinds = db.session.scalars(select(ChatKitItem.kind).order_by(ChatKitItem.position)).all()
        notes = db.session.scalars(
            select(ChatKitItem.data).where(ChatKitItem.kind == "sdk_hidden_context")
        ).all()
    assert kinds == ["user_message", "sdk_hidden_context"]
    assert notes[0]["content"] == (
        "The user cancelled the stream. Stop responding to the prior request."
    )
    # The loop that served the cut reply serves the next one whole: nothing of it was left.
    [thread] = call(client, token, "threads.list")["data"]
    followed = stream(client, token, add_message_request(thread["id"], "still there?"))
    [reply] = done_items(followed, "assistant_message")
    assert assistant_text(reply).endswith("You said: still there?")


def test_a_failure_while_ending_a_reply_cut_short_is_logged_not_lost(
    client, token, monkeypatch, caplog
):
    """The note of a reply cut short could not be stored: asyncio's own shutdown logged that;
    closing the request's work on a kept loop must too."""

    reason = "the database is down"

    async def cannot_store(self, thread, pending_items, context):
        raise RuntimeError(reason)

    monkeypatch.setattr(CodexChatKitServer, "handle_stream_cancelled", cannot_store)
    response = client.post("/chatkit", json=create_request("hello"), headers=token, buffered=False)
    chunks = iter(response.response)
    while b"assistant_message" not in next(chunks):  # the reply has begun
        pass
    with caplog.at_level(logging.ERROR, logger="codexweb.runtime.loops"):
        response.close()
    [failure] = [r for r in caplog.records if r.name == "codexweb.runtime.loops"]
    assert "failed: RuntimeError" in failure.getMessage()
    assert "cannot_store" in failure.getMessage()  # where it was raised
    assert "the database is down" not in failure.getMessage()  # a message may quote the user


def test_new_thread_ids_do_not_collide_where_the_sdks_would(
    client, owner, token, make_user, auth_headers, monkeypatch
):
    """The SDK names a thread `thr_` and 8 hex digits (32 bits): by the million threads a new
    one meets an old one, and thread ids are one key across every user. Ours add 96 bits."""
    fixed = uuid.UUID("12345678123456781234567812345678")
    monkeypatch.setattr("chatkit.store.uuid.uuid4", lambda: fixed)
    mine = stream(client, token, create_request("mine"))[0]["thread"]["id"]
    other = auth_headers(make_user("other-threads@example.com"))
    theirs_token = chatkit_token(client, other, new_session(client, other)["session_id"])
    theirs = stream(client, theirs_token, create_request("theirs"))[0]["thread"]["id"]
    assert mine != theirs
    assert mine.startswith("thr_12345678") and len(mine) == len("thr_") + 32


def test_threads_list_pages_newest_first_and_update_and_delete_work(client, token):
    ids = [stream(client, token, create_request(f"n{n}"))[0]["thread"]["id"] for n in range(3)]

    page = call(client, token, "threads.list", limit=2, order="desc")
    assert [thread["id"] for thread in page["data"]] == [ids[2], ids[1]]
    assert page["has_more"] is True
    rest = call(client, token, "threads.list", limit=2, order="desc", after=page["after"])
    assert [thread["id"] for thread in rest["data"]] == [ids[0]]

    renamed = call(client, token, "threads.update", thread_id=ids[0], title="Renamed")
    assert renamed["title"] == "Renamed"
    call(client, token, "threads.delete", thread_id=ids[1])
    remaining = call(client, token, "threads.list", limit=10, order="asc")
    assert [(t["id"], t.get("title")) for t in remaining["data"]] == [
        (ids[0], "Renamed"),
        (ids[2], None),
    ]
    # A deleted thread takes no more messages; the others are untouched.
    problem(post(client, token, add_message_request(ids[1], "still there?")), 404, "not_found")
    assert call(client, token, "items.list", thread_id=ids[0])["data"]


# Agents on a model -----------------------------------------------------------------------


@pytest.fixture
def config_overrides(request):
    marker = request.node.get_closest_marker("runtime_config")
    return marker.kwargs if marker else {}


@pytest.fixture
def modelled(client, owner, model_server, app):
    app.config["CODEX_AGENTS"] = model_agents(model_server.base_url)
    created = new_session(client, owner, agent_id="modelled", context={"repo": "acme/app"})
    return created, chatkit_token(client, owner, created["session_id"])


def test_a_model_agent_streams_and_follow_ups_carry_the_conversation(
    client, modelled, model_server
):
    _session, token = modelled
    first = stream(client, token, create_request("First question"))
    thread_id = first[0]["thread"]["id"]
    assert len(deltas(first)) > 3
    [answer] = done_items(first, "assistant_message")
    assert assistant_text(answer) == model_server.reply

    second = stream(client, token, add_message_request(thread_id, "Second question"))
    assert assistant_text(done_items(second, "assistant_message")[0]) == model_server.reply

    sent = model_server.chat_requests()
    assert len(sent) == 2 and sent[1]["stream"] is True
    system, *conversation = sent[1]["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("You answer briefly.")
    assert "'dashboard'" in system["content"] and '{"repo": "acme/app"}' in system["content"]
    assert [(m["role"], _text(m["content"])) for m in conversation] == [
        ("user", "First question"),
        ("assistant", model_server.reply),
        ("user", "Second question"),
    ]


def test_replies_reuse_the_open_connection_to_the_model(client, modelled, model_server):
    """Against OpenAI a new connection is a TCP and TLS handshake before the first token: the
    model client stays with the event loop the next request borrows, its connection open."""
    _session, token = modelled
    first = stream(client, token, create_request("First question"))
    for text in ("Second question", "Third question"):
        stream(client, token, add_message_request(first[0]["thread"]["id"], text))
    assert len(model_server.chat_requests()) == 3
    assert model_server.connections == 1


def test_a_kept_connection_the_model_server_just_closed_costs_the_user_nothing(
    client, modelled, model_server, events, monkeypatch
):
    """A server closes idle connections (uvicorn, under vLLM and LiteLLM, after 5 s): the
    next request may go out on one at the moment it does. Nothing has reached the user yet,
    so the reply is asked for once more, on a new connection, and the first attempt leaves
    nothing running."""
    _session, token = modelled
    first = stream(client, token, create_request("First question"))
    model_server.close_kept_connection_next()
    run_streamed = Runner.run_streamed
    running_at_start: list[int] = []  # tasks on the loop as each attempt starts

    def counting(*args, **kwargs):
        running_at_start.append(len(asyncio.all_tasks()))
        return run_streamed(*args, **kwargs)

    monkeypatch.setattr("codexweb.runtime.agents.Runner.run_streamed", counting)
    second = stream(client, token, add_message_request(first[0]["thread"]["id"], "Second"))
    assert len(running_at_start) == 2
    assert running_at_start[1] == running_at_start[0]  # the first attempt left nothing running
    assert not model_server.closes_kept_connection()  # it did hang up on the kept one
    assert assistant_text(done_items(second, "assistant_message")[0]) == model_server.reply
    assert second[-1]["type"] != "error"
    assert model_server.connections == 2
    assert events.named("chatkit.response.failed") == []
    [retried] = events.named("chatkit.model.retried")
    assert retried["error"] == "APIConnectionError"


MARKER = contextvars.ContextVar("marker", default="nothing")


def test_a_kept_loop_holds_nothing_of_the_request_that_made_it():
    """A kept loop lives as long as its worker: the context it starts in stays with it, and
    must not be the first request's (its body, `g`, database objects)."""

    async def seen() -> str:
        return MARKER.get()

    def first_request() -> KeptLoop:
        MARKER.set("the first request's data")
        kept = LoopPool().borrow()
        assert kept.runner.run(seen(), context=contextvars.copy_context()) != "nothing"
        return kept

    kept = contextvars.copy_context().run(first_request)
    assert kept.runner.run(seen()) == "nothing"  # the loop's own context
    kept.close()


def test_a_loop_unused_for_a_minute_is_closed_with_its_connections():
    now = [1000.0]
    pool = LoopPool(clock=lambda: now[0])
    idle, busy = pool.borrow(), pool.borrow()
    client = idle.runner.run(idle.clients.client(("http://127.0.0.1:9/v1", "key", 5.0)))
    pool.give_back(idle)
    now[0] += 30
    pool.give_back(busy)
    now[0] += 31  # `idle` unused for 61 s, `busy` for 31 s
    assert pool.borrow() is busy
    assert client.is_closed()
    fresh = pool.borrow()
    assert fresh is not idle  # a new loop: the stale one is gone
    busy.close()
    fresh.close()


def test_at_most_eight_model_clients_are_kept_per_loop():
    """A loop keeps a client per model setting; a ninth closes the least recently used."""

    async def use_nine_settings():
        kept = ModelClients()
        settings = [(f"http://127.0.0.1:{port}/v1", "key", 5.0) for port in range(9, 18)]
        eight = [await kept.client(each) for each in settings[:8]]
        assert await kept.client(settings[0]) is eight[0]  # used again: the most recent now
        ninth = await kept.client(settings[8])
        return eight, ninth

    eight, ninth = asyncio.run(use_nine_settings())
    assert [client.is_closed() for client in eight] == [False, True, *[False] * 6]
    assert not ninth.is_closed()


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def test_a_failing_model_ends_with_a_retryable_error_and_retry_answers(
    client, modelled, model_server, app, events
):
    _session, token = modelled
    failures_before = metric_value("codexweb_chatkit_model_failures_total", reason="error")
    model_server.fail_next()
    failed = stream(client, token, create_request("Are you there?"))
    assert (
        metric_value("codexweb_chatkit_model_failures_total", reason="error") == failures_before + 1
    )
    assert metric_value("codexweb_chatkit_streams_active") == 0

    thread_id = failed[0]["thread"]["id"]
    assert failed[-1] == {
        "type": "error",
        "code": "custom",
        "message": "The agent is unavailable right now. Please try again.",
        "allow_retry": True,
    }
    [kept] = done_items(failed, "user_message")
    items = call(client, token, "items.list", thread_id=thread_id, order="asc")["data"]
    assert [item["type"] for item in items] == ["user_message"]
    assert events.named("chatkit.response.failed")[0]["error"]

    retried = stream(
        client,
        token,
        {
            "type": "threads.retry_after_item",
            "params": {"thread_id": thread_id, "item_id": kept["id"]},
        },
    )
    assert assistant_text(done_items(retried, "assistant_message")[0]) == model_server.reply
    items = call(client, token, "items.list", thread_id=thread_id, order="asc")["data"]
    assert [item["type"] for item in items] == ["user_message", "assistant_message"]


@pytest.mark.runtime_config(CHATKIT_MODEL_TIMEOUT=1)
def test_a_hanging_model_times_out_into_an_error_event(client, modelled, model_server):
    _session, token = modelled
    model_server.hang_next()
    events_seen = stream(client, token, create_request("Hello?"))

    assert events_seen[-1]["type"] == "error" and events_seen[-1]["allow_retry"] is True
    thread_id = events_seen[0]["thread"]["id"]
    items = call(client, token, "items.list", thread_id=thread_id, order="asc")["data"]
    assert [item["type"] for item in items] == ["user_message"]


# Who may call ----------------------------------------------------------------------------


def test_without_a_token_the_runtime_answers_401(client, owner):
    refused = client.post("/chatkit", json={"type": "threads.list", "params": {}})
    problem(refused, 401, "authentication_required")
    assert refused.headers["WWW-Authenticate"] == "Bearer"


def test_an_access_token_is_not_a_chatkit_token(client, owner):
    refused = post(client, owner, {"type": "threads.list", "params": {}})
    problem(refused, 401, "token_invalid")


def test_a_browser_login_cookie_does_not_authenticate_the_runtime(client, user):
    login = client.post(
        "/api/auth/login", json={"email": user.email, "password": "correct horse battery staple"}
    )
    assert login.status_code == 200
    problem(
        client.post("/chatkit", json={"type": "threads.list", "params": {}}),
        401,
        "authentication_required",
    )


def signing_kid(headers: dict[str, str]) -> str:
    header = headers["Authorization"].removeprefix("Bearer ").split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_tokens_verify_across_a_key_rotation(client, owner, session, token, app):
    """The runtime keeps its verifying keys per process: a rotation must reach them."""
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    with app.app_context():
        rotate_keys()
    fresh = chatkit_token(client, owner, session["session_id"])
    assert signing_kid(fresh) != signing_kid(token)
    for bearer in (fresh, token):  # the old key stays published until its tokens expire
        assert post(client, bearer, {"type": "threads.list", "params": {}}).status_code == 200


def test_a_token_signed_with_a_key_another_host_just_made_verifies_at_once(
    client, owner, session, token, app_factory
):
    """Hosts cache the keys for CHATKIT_KEYS_CACHE_SECONDS. A host that meets a token naming
    a key it does not know yet reads the keys afresh, instead of refusing for that long."""
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    other_host = app_factory()  # the same database
    with other_host.app_context():
        rotate_keys()
    fresh = chatkit_token(other_host.test_client(), owner, session["session_id"])
    assert post(client, fresh, {"type": "threads.list", "params": {}}).status_code == 200


def test_the_token_check_leaves_the_process_warning_filters_alone(client, token, monkeypatch):
    """A gthread worker checks tokens on several threads at once. `warnings.catch_warnings()`
    swaps the process-wide filter list, and two threads interleaving it left "ignore every
    warning" installed for the worker's life: the check must not touch the filters at all."""
    decode, seen = jwt.decode, []

    def spying_decode(*args, **kwargs):
        seen.append(list(warnings.filters))
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spying_decode)
    outside = list(warnings.filters)
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    assert seen == [outside]
    assert warnings.filters == outside


@pytest.mark.parametrize("ending", ["close", "delete"])
def test_an_ended_sessions_unexpired_token_is_refused_at_once(
    client, owner, session, token, ending
):
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    if ending == "close":
        client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    else:
        client.delete(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    problem(post(client, token, create_request("still there?")), 401, "token_invalid")


def test_disabling_the_account_refuses_its_unexpired_token_at_once(client, app, user, token):
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    result = app.test_cli_runner().invoke(args=["users", "disable", user.email])
    assert result.exit_code == 0, result.output
    problem(post(client, token, create_request("still there?")), 401, "token_invalid")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ChatKitThread)) == 0


def current_login_id(client, headers) -> str:
    logins = client.get("/api/auth/logins", headers=headers).get_json()["logins"]
    return next(login["id"] for login in logins if login["current"])


@pytest.mark.parametrize(
    "ending", ["logout", "ended_from_another_login", "others_revoked", "password_changed"]
)
def test_ending_the_login_that_minted_a_token_refuses_the_token_at_once(
    client, app, user, auth_headers, session, token, owner, ending
):
    """CONTRACT §3: ending a login ends it "everywhere it is used"; its ChatKit tokens too."""
    other = auth_headers(user)
    other_token = chatkit_token(client, other, session["session_id"])
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200
    if ending == "logout":
        assert client.post("/api/auth/logout", headers=owner).status_code == 204
    elif ending == "ended_from_another_login":
        ended = current_login_id(client, owner)
        assert client.delete(f"/api/auth/logins/{ended}", headers=other).status_code == 204
    elif ending == "others_revoked":
        assert client.post("/api/auth/logins/revoke-others", headers=other).status_code == 204
    else:
        changed = client.post(
            "/api/auth/password/change",
            json={"current_password": TEST_PASSWORD, "new_password": "another long passphrase"},
            headers=other,
        )
        assert changed.status_code == 200, changed.get_data(as_text=True)
    problem(post(client, token, create_request("still there?")), 401, "token_invalid")
    # The login that stays keeps its tokens, for the same session.
    assert post(client, other_token, {"type": "threads.list", "params": {}}).status_code == 200
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ChatKitThread)) == 0


def test_a_token_that_names_no_login_is_refused(client, token, app):
    """Tokens minted before they named their login (at most CHATKIT_TOKEN_TTL old at the
    upgrade) open nothing: the page and clients mint a new one, as after any 401."""
    with app.app_context():
        signing = key_store().current()
        claims = jwt.decode(
            token["Authorization"].split()[1], verifying_keys(), algorithms=["EdDSA"]
        ).claims
        assert isinstance(claims.pop("lid"), str)
        unbound = jwt.encode(
            {"alg": "EdDSA", "kid": signing.kid}, claims, signing.key, algorithms=["EdDSA"]
        )
    listing = {"type": "threads.list", "params": {}}
    problem(post(client, {"Authorization": f"Bearer {unbound}"}, listing), 401, "token_invalid")


def test_an_expired_sessions_token_is_refused(client, token, frozen_clock, session):
    from datetime import datetime, timedelta

    expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
    frozen_clock(expires + timedelta(seconds=1))
    problem(post(client, token, {"type": "threads.list", "params": {}}), 401, "token_invalid")


def test_another_users_or_sessions_threads_do_not_exist(
    client, owner, token, make_user, auth_headers, app
):
    thread_id = stream(client, token, create_request("private words"))[0]["thread"]["id"]
    before = stored(app)

    other_session = new_session(client, owner, placement="developer-workbench")
    mine_elsewhere = chatkit_token(client, owner, other_session["session_id"])
    stranger = auth_headers(make_user("stranger@example.com"))
    theirs = chatkit_token(client, stranger, new_session(client, stranger)["session_id"])

    for outsider in (mine_elsewhere, theirs):
        assert call(client, outsider, "threads.list")["data"] == []
        for body in (
            {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
            {"type": "items.list", "params": {"thread_id": thread_id}},
            {"type": "threads.update", "params": {"thread_id": thread_id, "title": "mine"}},
            {"type": "threads.delete", "params": {"thread_id": thread_id}},
            add_message_request(thread_id, "let me in"),
        ):
            refused = post(client, outsider, body)
            assert refused.status_code == 404, body
            assert "private words" not in refused.get_data(as_text=True)
    assert stored(app) == before


# Limits ----------------------------------------------------------------------------------


@pytest.mark.runtime_config(RATELIMIT_ENABLED=True, CHATKIT_MESSAGES_PER_MINUTE=2)
def test_the_per_session_message_limit_refuses_and_stores_nothing(client, token, app):
    thread_id = stream(client, token, create_request("one"))[0]["thread"]["id"]
    stream(client, token, add_message_request(thread_id, "two"))
    before = stored(app)

    refused = post(client, token, add_message_request(thread_id, "three"))
    body = problem(refused, 429, "rate_limited")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["detail"] == f"Codex is busy, please retry in {retry_after} seconds"
    assert stored(app) == before
    # Reading is not a message: it stays allowed.
    assert post(client, token, {"type": "threads.list", "params": {}}).status_code == 200


@pytest.mark.runtime_config(
    RATELIMIT_ENABLED=True, CHATKIT_MESSAGES_PER_MINUTE=1, CHATKIT_MAX_MESSAGE_CHARS=10
)
def test_refused_requests_do_not_use_up_the_message_limit(client, token):
    """A message refused as too long, or a retry of nothing, ran no agent: the one message
    a minute is still there to send."""
    for _ in range(3):
        problem(post(client, token, create_request("x" * 11)), 422, "invalid_request")
    problem(post(client, token, retry_after("thr_none", "msg_none")), 404, "not_found")
    assert stream(client, token, create_request("fits"))[0]["type"] == "thread.created"
    problem(post(client, token, create_request("over")), 429, "rate_limited")


@pytest.mark.runtime_config(CHATKIT_MAX_MESSAGE_CHARS=10)
def test_a_too_long_message_is_refused_and_not_stored(client, token, app):
    refused = post(client, token, create_request("x" * 11))
    body = problem(refused, 422, "invalid_request")
    assert body["detail"] == "The message is too long: at most 10 characters."
    assert stored(app) == (0, 0)
    assert stream(client, token, create_request("x" * 10))[0]["type"] == "thread.created"


@pytest.mark.runtime_config(RATELIMIT_ENABLED=True, CHATKIT_MESSAGES_PER_MINUTE=2)
def test_retries_count_against_the_message_limit(client, token, app):
    """A retry runs the agent as a new message does: it must not be a way around the limit."""
    events_seen = stream(client, token, create_request("one"))
    thread_id = events_seen[0]["thread"]["id"]
    (message,) = done_items(events_seen, "user_message")
    retry = {
        "type": "threads.retry_after_item",
        "params": {"thread_id": thread_id, "item_id": message["id"]},
    }
    assert post(client, token, retry).status_code == 200
    before = stored(app)
    problem(post(client, token, retry), 429, "rate_limited")
    assert stored(app) == before


@pytest.mark.runtime_config(CHATKIT_MAX_MESSAGE_CHARS=10)
def test_quoted_text_counts_towards_the_message_length(client, token, app):
    body = create_request("short")
    body["params"]["input"]["quoted_text"] = "q" * 6  # 5 + 6 characters for the model to read
    refused = post(client, token, body)
    assert problem(refused, 422, "invalid_request")["detail"] == (
        "The message is too long: at most 10 characters."
    )
    assert stored(app) == (0, 0)


def retry_after(thread_id: str, item_id: str) -> dict:
    return {
        "type": "threads.retry_after_item",
        "params": {"thread_id": thread_id, "item_id": item_id},
    }


def test_requests_the_thread_cannot_take_are_clear_refusals_that_change_nothing(client, token, app):
    events_seen = stream(client, token, create_request("hello"))
    thread_id = events_seen[0]["thread"]["id"]
    (reply,) = done_items(events_seen, "assistant_message")
    before = stored(app)
    # Nothing under that id to answer again.
    problem(post(client, token, retry_after(thread_id, "msg_unknown")), 404, "not_found")
    # Only a user message can be answered again.
    problem(post(client, token, retry_after(thread_id, reply["id"])), 422, "invalid_request")
    # No tool call is waiting for an output.
    tool_output = {
        "type": "threads.add_client_tool_output",
        "params": {"thread_id": thread_id, "result": {"ok": True}},
    }
    problem(post(client, token, tool_output), 422, "invalid_request")
    assert stored(app) == before


@pytest.mark.parametrize(
    "body",
    [
        {
            "type": "attachments.create",
            "params": {"name": "a.txt", "size": 3, "mime_type": "text/plain"},
        },
        {"type": "attachments.delete", "params": {"attachment_id": "atc_1"}},
        {"type": "input.transcribe", "params": {"audio_base64": "AAAA", "mime_type": "audio/webm"}},
        {
            "type": "threads.sync_custom_action",
            "params": {"thread_id": "thr_1", "item_id": "it_1", "action": {"type": "x"}},
        },
        {
            "type": "threads.custom_action",
            "params": {"thread_id": "thr_1", "item_id": None, "action": {"type": "x"}},
        },
    ],
    ids=lambda body: body["type"],
)
def test_protocol_features_this_server_lacks_are_refused_by_name(client, token, app, body):
    refused = problem(post(client, token, body), 422, "invalid_request")
    assert refused["errors"] == [
        {"field": "type", "message": f"{body['type']} is not supported by this server."}
    ]
    assert stored(app) == (0, 0)


def test_a_message_with_attachments_is_refused_before_anything_is_stored(client, token, app):
    """This server keeps no attachments. Before, `threads.create` stored its thread, streamed
    `thread.created`, then broke on the unknown attachment, leaving an empty thread."""
    with_attachment = create_request("look at this")
    with_attachment["params"]["input"]["attachments"] = ["atc_unknown"]
    refused = problem(post(client, token, with_attachment), 422, "invalid_request")
    assert refused["errors"] == [
        {"field": "params.input.attachments", "message": "Not supported by this server."}
    ]
    assert stored(app) == (0, 0)

    thread_id = stream(client, token, create_request("hello"))[0]["thread"]["id"]
    before = stored(app)
    follow_up = add_message_request(thread_id, "and this")
    follow_up["params"]["input"]["attachments"] = ["atc_unknown"]
    problem(post(client, token, follow_up), 422, "invalid_request")
    assert stored(app) == before


def test_an_unknown_thread_is_a_404_with_no_traceback_logged(client, token, caplog):
    """The SDK logs a stream's every exception with its traceback; an unknown thread is the
    caller's mistake, answered 404, and leaves no traceback for an operator to chase."""
    with caplog.at_level(logging.INFO):
        problem(post(client, token, add_message_request("thr_unknown", "hello?")), 404, "not_found")
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []


def test_the_sdks_other_records_of_an_unknown_object_stay(caplog):
    """Only the record of a stream the unknown object ended is dropped; the SDK also logs
    a `NotFoundError` it turns into an `error` event itself, inside a reply: ours to see."""
    sdk = logging.getLogger("chatkit")
    with caplog.at_level(logging.INFO):
        for logged in ("Error while generating streamed response", None):
            try:
                raise NotFoundError("Item msg_1 not found")
            except NotFoundError as error:
                sdk.exception(logged or error)
    assert [r.getMessage() for r in caplog.records if r.name == "chatkit"] == [
        "Item msg_1 not found"
    ]


def test_a_fault_of_ours_stays_a_500_with_its_request_id(client, token, monkeypatch):
    """Only the SDK's "not in this thread's state" refusals become 422: a ValueError anywhere
    else is a bug, answered as one (and logged with its traceback), not passed off as the
    caller's mistake."""

    async def broken(*args, **kwargs):
        raise ValueError("a bug in the store")

    monkeypatch.setattr(SessionStore, "load_threads", broken)
    refused = post(client, token, {"type": "threads.list", "params": {}})
    body = problem(refused, 500, "internal_error")
    assert body["request_id"] == refused.headers["X-Request-ID"]


@pytest.mark.parametrize("limit", [10**20, -3, 0])
def test_any_page_size_gets_a_sensible_page(client, token, limit):
    thread_id = stream(client, token, create_request("hello"))[0]["thread"]["id"]
    threads = call(client, token, "threads.list", limit=limit)
    assert [thread["id"] for thread in threads["data"]] == [thread_id]
    items = call(client, token, "items.list", thread_id=thread_id, limit=limit)
    assert len(items["data"]) == (1 if limit == -3 else 2)
    assert items["has_more"] is (limit == -3)


def feedback(thread_id: str, item_ids: list[str], kind: str = "positive") -> dict:
    return {
        "type": "items.feedback",
        "params": {"thread_id": thread_id, "item_ids": item_ids, "kind": kind},
    }


def verdicts(app) -> dict[str, str | None]:
    with app.app_context():
        rows = db.session.execute(select(ChatKitItem.item_id, ChatKitItem.feedback)).all()
        return dict(rows)


def test_feedback_is_kept_with_its_items(client, token, app, owner, make_user, auth_headers):
    events_seen = stream(client, token, create_request("rate me"))
    thread_id = events_seen[0]["thread"]["id"]
    (reply,) = done_items(events_seen, "assistant_message")
    (message,) = done_items(events_seen, "user_message")
    assert post(client, token, feedback(thread_id, [reply["id"]], "negative")).get_json() == {}
    assert verdicts(app) == {message["id"]: None, reply["id"]: "negative"}
    assert post(client, token, feedback(thread_id, [reply["id"]], "positive")).status_code == 200
    assert verdicts(app)[reply["id"]] == "positive"  # the last verdict counts

    # An item that is not this thread's: 404, and no verdict changes, not even the others'.
    unknown = post(client, token, feedback(thread_id, [message["id"], "msg_nope"], "negative"))
    problem(unknown, 404, "not_found")
    stranger = auth_headers(make_user("stranger-feedback@example.com"))
    theirs = chatkit_token(client, stranger, new_session(client, stranger)["session_id"])
    problem(post(client, theirs, feedback(thread_id, [reply["id"]], "negative")), 404, "not_found")
    assert verdicts(app) == {message["id"]: None, reply["id"]: "positive"}


@pytest.mark.parametrize(
    "body",
    [
        "nonsense",
        "{}",
        '{"type": {}, "params": {"limit": 20}}',  # once a 500: a dict in a set lookup
        '{"type": ["threads.create"], "params": {}}',
        '{"type": 7}',
        '{"type": null}',
        '{"type": "threads.create", "params": "hello"}',
        '{"type": "threads.nope", "params": {}}',
    ],
)
def test_a_body_that_is_not_a_chatkit_request_is_422(client, token, app, body):
    response = client.post("/chatkit", data=body, content_type="application/json", headers=token)
    problem(response, 422, "invalid_request")
    assert stored(app) == (0, 0)


# The transcript --------------------------------------------------------------------------


def test_the_transcript_reads_the_current_thread_oldest_first_in_pages(
    client, owner, session, token
):
    session_id = session["session_id"]
    empty = client.get(f"/api/codex/sessions/{session_id}/transcript", headers=owner)
    assert empty.get_json() == {
        "session_id": session_id,
        "thread_id": None,
        "items": [],
        "next_cursor": None,
    }
    first_thread = stream(client, token, create_request("old thread"))[0]["thread"]["id"]
    thread_id = stream(client, token, create_request("hello"))[0]["thread"]["id"]
    stream(client, token, add_message_request(thread_id, "again"))

    url = f"/api/codex/sessions/{session_id}/transcript"
    page = client.get(f"{url}?limit=3", headers=owner).get_json()
    assert page["thread_id"] == thread_id
    assert [(item["role"], item["text"]) for item in page["items"]] == [
        ("user", "hello"),
        ("assistant", f"{DEMO_PREFIX} You said: hello"),
        ("user", "again"),
    ]
    assert page["items"][0]["created_at"].endswith("Z")
    rest = client.get(f"{url}?limit=3&cursor={page['next_cursor']}", headers=owner).get_json()
    assert [item["role"] for item in rest["items"]] == ["assistant"]
    assert rest["next_cursor"] is None

    older = client.get(f"{url}?thread_id={first_thread}", headers=owner).get_json()
    assert [item["text"] for item in older["items"]][0] == "old thread"

    # Readable after closing; another user's session and a foreign thread are 404.
    client.post(f"/api/codex/sessions/{session_id}/close", headers=owner)
    assert client.get(url, headers=owner).status_code == 200
    problem(client.get(f"{url}?cursor=bogus", headers=owner), 422, "invalid_request")
    other = new_session(client, owner, placement="developer-workbench")["session_id"]
    foreign = client.get(
        f"/api/codex/sessions/{other}/transcript?thread_id={thread_id}", headers=owner
    )
    problem(foreign, 404, "session_not_found")


def test_a_cursor_past_any_position_is_422_not_500(client, owner, session, token):
    stream(client, token, create_request("hello"))
    far = base64.urlsafe_b64encode(json.dumps({"after": 10**30}).encode()).decode().rstrip("=")
    url = f"/api/codex/sessions/{session['session_id']}/transcript?cursor={far}"
    problem(client.get(url, headers=owner), 422, "invalid_request")


def test_deleting_the_current_thread_leaves_the_session_with_none(client, owner, session, token):
    session_id = session["session_id"]
    kept = stream(client, token, create_request("kept"))[0]["thread"]["id"]
    current = stream(client, token, create_request("deleted"))[0]["thread"]["id"]
    assert call(client, token, "threads.delete", thread_id=current) == {}

    resumed = client.get(f"/api/codex/sessions/{session_id}", headers=owner).get_json()
    assert resumed["thread_id"] is None
    transcript = client.get(f"/api/codex/sessions/{session_id}/transcript", headers=owner)
    assert transcript.status_code == 200
    assert transcript.get_json()["items"] == []
    # Deleting another thread leaves the current one alone; writing again makes one current.
    latest = stream(client, token, create_request("again"))[0]["thread"]["id"]
    assert call(client, token, "threads.delete", thread_id=kept) == {}
    resumed = client.get(f"/api/codex/sessions/{session_id}", headers=owner).get_json()
    assert resumed["thread_id"] == latest


def test_a_strangers_transcript_is_404(client, session, make_user, auth_headers):
    stranger = auth_headers(make_user("stranger@example.com"))
    response = client.get(
        f"/api/codex/sessions/{session['session_id']}/transcript", headers=stranger
    )
    problem(response, 404, "session_not_found")


def test_deleting_a_session_removes_its_transcript(client, owner, session, token, app):
    stream(client, token, create_request("forget me"))
    assert stored(app) == (1, 2)
    assert (
        client.delete(f"/api/codex/sessions/{session['session_id']}", headers=owner).status_code
        == 204
    )
    assert stored(app) == (0, 0)


def test_purging_old_sessions_removes_their_transcripts(
    client, owner, session, token, app, runner, frozen_clock
):
    from datetime import datetime, timedelta

    stream(client, token, create_request("old news"))
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    frozen_clock(datetime.now().astimezone() + timedelta(days=31))
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert stored(app) == (0, 0)


def test_events_carry_no_message_text(client, token, events):
    stream(client, token, create_request("a secret plan"))
    assert "secret plan" not in json.dumps(events)


def test_a_responses_api_agent_streams_and_follow_ups_carry_the_conversation(
    client, owner, model_server, app
):
    # CODEX_AGENTS `api: responses`: the Agents SDK's Responses model, on /v1/responses.
    app.config["CODEX_AGENTS"] = model_agents(model_server.base_url, api="responses")
    created = new_session(client, owner, agent_id="modelled", context={"repo": "acme/app"})
    token = chatkit_token(client, owner, created["session_id"])
    first = stream(client, token, create_request("First question"))
    thread_id = first[0]["thread"]["id"]
    assert len(deltas(first)) > 3
    assert assistant_text(done_items(first, "assistant_message")[0]) == model_server.reply

    second = stream(client, token, add_message_request(thread_id, "Second question"))
    assert assistant_text(done_items(second, "assistant_message")[0]) == model_server.reply
    listed = call(client, token, "items.list", thread_id=thread_id, order="asc")
    assert [item["type"] for item in listed["data"]] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]

    sent = model_server.chat_requests()
    assert len(sent) == 2 and sent[1]["stream"] is True
    assert sent[1]["instructions"].startswith("You answer briefly.")
    assert '{"repo": "acme/app"}' in sent[1]["instructions"]
    assert [(m["role"], _text(m["content"])) for m in sent[1]["input"]] == [
        ("user", "First question"),
        ("assistant", model_server.reply),
        ("user", "Second question"),
    ]


def test_replies_get_ids_of_their_own_when_the_model_reuses_its_item_ids(
    client, owner, model_server, app
):
    # An OpenAI-compatible server may name every message alike; the thread must not care.
    model_server.reused_item_id = "msg_0"
    app.config["CODEX_AGENTS"] = model_agents(model_server.base_url, api="responses")
    created = new_session(client, owner, agent_id="modelled")
    token = chatkit_token(client, owner, created["session_id"])
    first = stream(client, token, create_request("First question"))
    thread_id = first[0]["thread"]["id"]
    second = stream(client, token, add_message_request(thread_id, "Second question"))
    answers = done_items(first, "assistant_message") + done_items(second, "assistant_message")
    assert [assistant_text(answer) for answer in answers] == [model_server.reply] * 2
    listed = call(client, token, "items.list", thread_id=thread_id, order="asc")
    ids = [item["id"] for item in listed["data"]]
    assert len(set(ids)) == 4 and "msg_0" not in ids
    assert [item["id"] for item in listed["data"][1::2]] == [answer["id"] for answer in answers]
