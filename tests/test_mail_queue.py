"""Mail leaves through a durable queue, never inside the request (issue 12, finding 9): an
SMTP server that hangs slows no request, the mail arrives once it recovers, retries back
off and give up (logged), and known and unknown addresses cost the request the same."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller

from codexweb.extensions import db
from codexweb.models import MailMessage
from codexweb.outbox import stop_drainer
from tests.conftest import TEST_PASSWORD, deliver_mail
from tests.servers import free_port

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class HangingSmtp:
    """Accepts connections and never says a word (an SMTP server stuck or overloaded)."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        # shutdown() wakes the blocked accept(), so the port is free once the thread ends.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=10)
        for connection in self.accepted:
            connection.close()


class Collector:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def outbox_rows(app) -> list[MailMessage]:
    with app.app_context():
        return list(db.session.execute(db.select(MailMessage)).scalars())


def test_a_hanging_smtp_server_holds_up_no_request_and_the_mail_arrives_later(
    app_factory, make_user_on, frozen_clock, events
):
    frozen_clock(NOW)
    port = free_port()
    hanging = HangingSmtp(port)
    app = app_factory(MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_TIMEOUT=1)
    make_user_on(app, "owner@example.com")
    try:
        response = app.test_client().post(
            "/api/auth/password/forgot", json={"email": "owner@example.com"}
        )
        assert response.status_code == 202
        assert hanging.accepted == []  # the request never spoke to the mail server
        assert deliver_mail(app) == 0  # the worker does, and times out
    finally:
        hanging.close()
    [failure] = events.named("auth.email.send_failed")
    assert failure["attempts"] == 1
    [row] = outbox_rows(app)
    assert row.status == "pending"
    assert row.next_attempt_at == NOW + timedelta(seconds=app.config["MAIL_RETRY_BASE"])

    collector = Collector()
    recovered = Controller(collector, hostname="127.0.0.1", port=port)
    recovered.start()
    try:
        assert deliver_mail(app) == 0  # not due yet: backing off
        frozen_clock(NOW + timedelta(seconds=app.config["MAIL_RETRY_BASE"]))
        assert deliver_mail(app) == 1
    finally:
        recovered.stop()
    [envelope] = collector.envelopes
    assert envelope.rcpt_tos == ["owner@example.com"]
    assert b"/reset-password/" in envelope.content
    [row] = outbox_rows(app)
    assert (row.status, row.attempts) == ("sent", 2)


def test_retries_back_off_and_give_up_logged(app_factory, make_user_on, frozen_clock, events):
    frozen_clock(NOW)
    app = app_factory(
        MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_MAX_ATTEMPTS=3
    )
    make_user_on(app, "owner@example.com")
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    moment = NOW
    for _ in range(3):
        assert deliver_mail(app) == 0
        [row] = outbox_rows(app)
        moment = row.next_attempt_at
        frozen_clock(moment)
    delays = [e["retry_at"] for e in events.named("auth.email.send_failed")]
    assert delays == [NOW + timedelta(seconds=30), NOW + timedelta(seconds=90)]
    [gave_up] = events.named("mail.gave_up")
    assert gave_up["level"] == "error"
    assert gave_up["attempts"] == 3 and gave_up["error"] == "ConnectionRefusedError"
    [row] = outbox_rows(app)
    assert row.status == "failed"
    assert deliver_mail(app) == 0


@pytest.mark.parametrize("path", ["/api/auth/password/forgot", "/api/auth/verify-email/resend"])
def test_known_and_unknown_addresses_cost_the_request_the_same(
    app_factory, make_user_on, outbox_for, path
):
    """The same work: one row queued either way; the unknown one is dropped by the worker."""
    app = app_factory()
    make_user_on(app, "known@example.com", verified=False)
    outbox = outbox_for(app)
    for email in ("known@example.com", "unknown@example.com"):
        assert app.test_client().post(path, json={"email": email}).status_code == 202
    assert len(outbox_rows(app)) == 2
    assert [message.to for message in outbox] == [["known@example.com"]]
    statuses = sorted(row.status for row in outbox_rows(app))
    assert statuses == ["dropped", "sent"]


def test_mail_is_queued_in_the_same_transaction_as_the_account(app, outbox):
    app.test_client().post(
        "/api/auth/register", json={"email": "new@example.com", "password": TEST_PASSWORD}
    )
    [row] = outbox_rows(app)
    assert row.kind == "verification" and row.status == "pending"
    assert "token" not in str(row.params) and "/verify-email/" not in row.base_url
    assert len(outbox) == 1


def test_the_thread_mode_delivers_with_no_worker_running(app_factory, make_user_on, outbox_for):
    app = app_factory(MAIL_QUEUE="thread")
    make_user_on(app, "owner@example.com")
    outbox = outbox_for(app, draining=False)
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    deadline = time.monotonic() + 20
    while not outbox and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [message.to for message in outbox] == [["owner@example.com"]]


def test_a_stopped_drainer_is_gone_and_the_next_enqueue_starts_another(
    app_factory, make_user_on, outbox_for
):
    app = app_factory(MAIL_QUEUE="thread")
    make_user_on(app, "owner@example.com")
    outbox = outbox_for(app, draining=False)
    client = app.test_client()
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    assert drainer_threads() == 1
    stop_drainer()
    assert drainer_threads() == 0
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    assert drainer_threads() == 1
    deadline = time.monotonic() + 20
    while len(outbox) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(outbox) == 2


def drainer_threads() -> int:
    return sum(thread.name == "codexweb-mail" for thread in threading.enumerate())


def test_the_worker_command_delivers_what_is_due(app, make_user, outbox_for, runner):
    make_user("owner@example.com")
    outbox = outbox_for(app, draining=False)
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    assert outbox == []
    result = runner.invoke(args=["mail", "worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "sent 1 message(s)" in result.output
    assert len(outbox) == 1


def test_purge_expired_forgets_finished_mail_past_retention(
    app, make_user, outbox, runner, frozen_clock
):
    make_user("owner@example.com")
    client = app.test_client()
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    client.post("/api/auth/password/forgot", json={"email": "nobody@example.com"})
    assert len(outbox) == 1
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})  # pending
    retention = timedelta(seconds=app.config["CODEX_SESSION_RETENTION"])
    frozen_clock(datetime.now(UTC) + retention + timedelta(seconds=1))
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert "forgot 2 delivered or abandoned email(s) past retention" in result.output
    assert [row.status for row in outbox_rows(app)] == ["pending"]


@pytest.fixture
def make_user_on():
    def make(app, email: str, *, verified: bool = True) -> None:
        from codexweb.auth.accounts import create_user

        with app.app_context():
            create_user(email, TEST_PASSWORD, verified=verified)
            db.session.commit()

    return make


@pytest.fixture
def outbox_for():
    """The locmem outbox of `app`; draining: reading it runs the queue first."""
    from tests.conftest import DrainingOutbox

    def make(app, *, draining: bool = True) -> list:
        state = app.extensions["mailman"]
        state.outbox = DrainingOutbox(app) if draining else []
        return state.outbox

    return make
