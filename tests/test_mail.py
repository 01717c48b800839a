"""Accounts email through the mail queue and every backend: locmem, file, console+file and a
real SMTP server, including one that hangs (issue 12, finding 9)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from aiosmtpd.controller import Controller

from tests.auth_support import (
    STRONG_PASSWORD,
    link_token,
    login_json,
    user_row,
)
from tests.conftest import deliver_mail
from tests.servers import free_port

REGISTER = {"email": "mail@example.com", "password": STRONG_PASSWORD}


def bodies(message) -> tuple[str, str]:
    """(plain text, HTML) of a parsed RFC 5322 message."""
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return plain, html


def test_the_verification_email_has_text_and_html_bodies_with_the_link(client, outbox):
    client.post("/api/auth/register", json=REGISTER)
    [sent] = outbox
    assert sent.subject == "Verify your email address for codexweb"
    assert sent.from_email == "codexweb <no-reply@localhost>"
    token = link_token(sent)
    link = f"http://localhost/verify-email/{token}"
    assert link in sent.body
    [(html, mimetype)] = sent.alternatives
    assert mimetype == "text/html"
    assert f'href="{link}"' in html
    assert "48 hours" in sent.body


def test_the_reset_email_links_to_the_reset_page(client, user, outbox):
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    [sent] = outbox
    assert sent.subject == "Reset your codexweb password"
    assert re.search(r"http://localhost/reset-password/\S+", sent.body)
    assert "60 minutes" in sent.body


def test_links_use_the_request_host_without_public_base_url(app_factory):
    app = app_factory(PUBLIC_BASE_URL=None)
    outbox = app.extensions["mailman"].outbox = []
    app.test_client().post(
        "/api/auth/register", json=REGISTER, base_url="https://codex.example.org:8443"
    )
    deliver_mail(app)
    assert "https://codex.example.org:8443/verify-email/" in outbox[0].body


def test_public_base_url_wins_over_the_request_host(app_factory):
    app = app_factory(PUBLIC_BASE_URL="https://codex.example.com/")
    outbox = app.extensions["mailman"].outbox = []
    app.test_client().post("/api/auth/register", json=REGISTER, base_url="http://internal:5000")
    deliver_mail(app)
    assert "https://codex.example.com/verify-email/" in outbox[0].body


def test_the_file_backend_writes_one_eml_per_message(app_factory, tmp_path):
    outbox_dir = tmp_path / "mails"
    app = app_factory(MAIL_BACKEND="file", MAIL_FILE_DIR=str(outbox_dir))
    client = app.test_client()
    client.post("/api/auth/register", json=REGISTER)
    client.post("/api/auth/password/forgot", json={"email": REGISTER["email"]})
    assert deliver_mail(app) == 2
    files = sorted(outbox_dir.glob("*.eml"))
    assert len(files) == 2
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in files
    ]
    assert {m["Subject"] for m in messages} == {
        "Verify your email address for codexweb",
        "Reset your codexweb password",
    }
    for message in messages:
        assert message["To"] == "mail@example.com"
        plain, html = bodies(message)
        assert "http://localhost/" in plain and "http://localhost/" in html


def test_the_dev_default_prints_and_keeps_a_copy(app_factory, tmp_path, capsys):
    outbox_dir = tmp_path / "dev-outbox"
    app = app_factory(MAIL_BACKEND="console+file", MAIL_FILE_DIR=str(outbox_dir))
    app.test_client().post("/api/auth/register", json=REGISTER)
    deliver_mail(app)
    printed = capsys.readouterr().out
    assert "Subject: Verify your email address for codexweb" in printed
    assert "/verify-email/" in printed
    [saved] = outbox_dir.glob("*.eml")
    assert (
        "/verify-email/"
        in bodies(email.message_from_bytes(saved.read_bytes(), policy=email.policy.default))[0]
    )


class Collector:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    collector = Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, collector
    finally:
        controller.stop()


def test_a_real_message_through_smtp(app_factory, smtp_server):
    controller, collector = smtp_server
    app = app_factory(
        MAIL_BACKEND="smtp",
        MAIL_SERVER=controller.hostname,
        MAIL_PORT=controller.port,
        MAIL_DEFAULT_SENDER="codexweb <no-reply@codex.test>",
    )
    client = app.test_client()
    assert client.post("/api/auth/register", json=REGISTER).status_code == 201
    assert collector.envelopes == []  # the request only queued it
    assert deliver_mail(app) == 1

    [envelope] = collector.envelopes
    assert envelope.rcpt_tos == ["mail@example.com"]
    assert envelope.mail_from == "no-reply@codex.test"
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == "Verify your email address for codexweb"
    assert message["To"] == "mail@example.com"
    plain, html = bodies(message)
    token = link_token(plain)
    assert f"http://localhost/verify-email/{token}" in html
    # The link that travelled through SMTP verifies the account.
    verified = client.post("/api/auth/verify-email", json={"token": token})
    assert verified.get_json()["user"]["email_verified"] is True


def test_a_mail_failure_on_register_keeps_the_account_and_retries(app_factory, events):
    closed_port = free_port()  # nothing listens there
    app = app_factory(
        MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=closed_port, MAIL_TIMEOUT=2
    )
    client = app.test_client()
    response = client.post("/api/auth/register", json=REGISTER)
    assert response.status_code == 201
    assert deliver_mail(app) == 0
    assert user_row(app, "mail@example.com") is not None
    [failure] = events.named("auth.email.send_failed")
    assert failure["kind"] == "verification"
    assert failure["user_id"] == response.get_json()["user"]["id"]
    assert failure["error"] == "ConnectionRefusedError"
    assert failure["attempts"] == 1
    assert events.named("auth.email.verification_sent") == []
    # The account works: the user can log in and ask for another email later.
    assert login_json(client, "mail@example.com", STRONG_PASSWORD).status_code == 200
    resend = client.post("/api/auth/verify-email/resend", json={"email": "mail@example.com"})
    assert resend.status_code == 202


def test_a_mail_failure_on_forgot_password_is_still_202(app_factory, events):
    app = app_factory(MAIL_BACKEND="smtp", MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port())
    with app.app_context():
        from codexweb.auth.accounts import create_user
        from codexweb.extensions import db

        create_user("owner@example.com", STRONG_PASSWORD, verified=True)
        db.session.commit()
    response = app.test_client().post(
        "/api/auth/password/forgot", json={"email": "owner@example.com"}
    )
    assert response.status_code == 202
    deliver_mail(app)
    assert events.named("auth.email.send_failed")[0]["kind"] == "password_reset"
