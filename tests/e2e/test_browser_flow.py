"""The pages in a real browser: the whole journey of issue 4, then the ChatKit area's
recovery paths (404 → /current, 401 → refresh the login, 429 → wait), and the keyboard.

Run only these: `.venv/bin/pytest tests/e2e`. With CODEXWEB_DOCS_SCREENSHOTS=docs the journey
also refreshes the README's screenshots (banner, resume card, toast).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import Page, expect

from ..servers import REPO, VENV_BIN, Server, free_port, wait_for_http
from .conftest import PASSWORD, link_path, mails_to, wait_for_mail

BUSY = re.compile(r"^Codex is busy, please retry in \d+ seconds$")
COUNTDOWN = re.compile(r"^\d+:\d\d$")


def docs_screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("CODEXWEB_DOCS_SCREENSHOTS")
    if folder:
        target = Path(folder) if Path(folder).is_absolute() else REPO / folder
        page.screenshot(path=str(target / f"{name}.png"), animations="disabled")


def create_verified_user(server: Server, address: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "users", "create", address]
        + ["--password", PASSWORD, "--verified"],
        cwd=REPO,
        env=server.env,
        check=True,
        capture_output=True,
    )


def log_in(page: Page, server: Server, address: str) -> None:
    page.goto(server.url + "/codex/chatkit")
    expect(page).to_have_url(server.url + "/login?next=/codex/chatkit")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + "/codex/chatkit")
    # htmx wires the forms at DOMContentLoaded: a click before that is a plain form post.
    page.wait_for_load_state()


def token_status(page: Page):
    return page.locator("[data-token-state]")


def expect_live_token(page: Page, issued: int | None = None) -> None:
    expect(token_status(page)).to_have_text("Connected.")
    expect(page.locator("[data-countdown]")).to_have_text(COUNTDOWN)
    if issued is not None:
        expect(page.locator("[data-chatkit-area]")).to_have_attribute(
            "data-tokens-issued", str(issued), timeout=20_000
        )


def start_session(page: Page) -> None:
    page.get_by_role("button", name="Start session").click()
    expect(page.get_by_role("heading", name="Demo agent")).to_be_visible()


def toasts(page: Page):
    return page.locator("#toasts .toast-message")


def test_the_whole_journey(page: Page, serve, watch, steps):
    # Two starts an hour: the third one in this journey is the 429 we want to see.
    server = serve(RATELIMIT_SESSION_CREATE="2/hour", CHATKIT_TOKEN_TTL=15)
    address = "journey@example.com"

    with steps("anonymous visitors are sent to log in"):
        page.goto(server.url + "/codex/chatkit")
        expect(page).to_have_url(server.url + "/login?next=/codex/chatkit")
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="Log in")).to_be_visible()

    with steps("sign up"):
        page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Create account"
        ).click()
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("navigation", name="Main")).to_contain_text(address)
        wait_for_mail(page, server, address, 1)
        assert len(mails_to(server, address)) == 1

    with steps("see the verify banner"):
        page.get_by_role("link", name="ChatKit").click()
        banner = page.locator("#verify-banner")
        expect(banner.get_by_role("heading", name="Verify your email")).to_be_visible()
        expect(page.get_by_role("button", name="Start session")).to_have_count(0)
        docs_screenshot(page, "banner")

    with steps("resend the verification email"):
        page.get_by_role("button", name="Resend verification email").click()
        expect(banner).to_contain_text(f"A new link is on its way to {address}")
        expect(page).to_have_url(server.url + "/codex/chatkit")  # swapped in place
        wait_for_mail(page, server, address, 2)
        assert len(mails_to(server, address)) == 2

    with steps("follow the emailed link"):
        page.goto(server.url + link_path(mails_to(server, address)[-1], "/verify-email/"))
        expect(page).to_have_url(server.url + "/codex/chatkit")
        expect(page.get_by_text("Your email address is verified.")).to_be_visible()
        expect(page.get_by_role("button", name="Start session")).to_be_visible()

    with steps("start a session and see the token countdown"):
        expect(page.get_by_label("Agent")).to_have_value("agent_123")
        page.get_by_label("Placement").select_option("developer-workbench")
        start_session(page)
        expect_live_token(page, issued=1)
        expect(page.get_by_role("heading", name="Conversation")).to_be_visible()
        expect(page.get_by_text("The live conversation needs JavaScript")).to_have_count(0)
        first = page.locator("[data-countdown]").inner_text()
        expect(page.locator("[data-countdown]")).not_to_have_text(first)  # it counts down

    with steps("the token is refreshed before it expires"):
        # 15 s tokens are refreshed at about 80 %: 12 s in, well before expiry.
        expect_live_token(page, issued=2)
        # The lifecycle reached the server's structured log through /api/codex/events.
        assert "client.chatkit.opened" in server.log()
        assert "client.chatkit.token.refreshed" in server.log()

    with steps("reload and resume"):
        page.reload()
        card = page.locator(".session-card")
        expect(card.get_by_role("button", name="Resume session")).to_be_visible()
        expect(card.get_by_role("button", name="Close session")).to_be_visible()
        expect(card).to_contain_text("Demo agent")
        expect(card).to_contain_text("developer-workbench")
        expect(card).to_contain_text("Started")
        expect(card).to_contain_text("Expires")
        docs_screenshot(page, "resume-card")
        card.get_by_role("button", name="Resume session").click()
        expect_live_token(page, issued=1)

    with steps("close"):
        page.get_by_role("button", name="Close session").click()
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        expect(toasts(page)).to_have_text(["Session closed."])

    with steps("see the history"):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Sessions").click()
        rows = page.locator(".sessions-table tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Closed")
        expect(rows.first).to_contain_text("developer-workbench")
        expect(rows.first.get_by_role("button", name="Close")).to_have_count(0)

    with steps("close an active session from the history"):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="ChatKit").click()
        start_session(page)  # the second start of the hour
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Sessions").click()
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Active")
        rows.first.get_by_role("button", name="Close").click()
        expect(rows.first).to_contain_text("Closed")
        expect(rows.first.get_by_role("button", name="Close")).to_have_count(0)

    with steps("trigger a 429 and see the toast"):
        watch.expect(r"status of 429|Response Status Error Code 429")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="ChatKit").click()
        page.get_by_role("button", name="Start session").click()
        expect(toasts(page)).to_have_text([BUSY])
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        docs_screenshot(page, "toast")
        page.get_by_role("button", name="Dismiss notification").click()
        expect(toasts(page)).to_have_count(0)

    with steps("log out"):
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(re.escape(server.url) + r"/login"))
        expect(page.get_by_role("navigation", name="Main")).not_to_contain_text(address)
        page.goto(server.url + "/codex/chatkit")
        expect(page).to_have_url(server.url + "/login?next=/codex/chatkit")


def test_a_closed_session_is_recovered_from_current_or_replaced(page: Page, serve, watch, steps):
    """A session replaced elsewhere (no tab of this browser said so) is found by the status
    check; the tab re-attaches to the current session through /current."""
    server = serve(CHATKIT_TOKEN_TTL=5)
    create_verified_user(server, "recover@example.com")
    watch.expect(r"status of 404")  # the token endpoint's answer for an ended session

    with steps("log in and start"):
        log_in(page, server, "recover@example.com")
        start_session(page)
        expect_live_token(page)
        area = page.locator("[data-chatkit-area]")
        first_id = area.get_attribute("data-session-id")

    with steps("an API client closes the session and starts a new one"):
        # Held "active" while the two calls run, so the tab cannot look in between them.
        first_url = server.url + f"/api/codex/sessions/{first_id}"
        page.route(first_url, lambda route: route.fulfill(json={"status": "active"}))
        csrf = {"X-CSRFToken": page.locator('meta[name="csrf-token"]').get_attribute("content")}
        assert page.request.post(first_url + "/close", headers=csrf).ok
        created = page.request.post(
            server.url + "/api/codex/sessions",
            data={"placement": area.get_attribute("data-placement"), "agent_id": "agent_123"},
            headers=csrf,
        )
        second_id = created.json()["session_id"]
        page.unroute(first_url)

    with steps("the tab re-attaches to the current session"):
        expect(area).to_have_attribute("data-session-id", second_id, timeout=15_000)
        expect(toasts(page)).to_contain_text(["Reconnected to your current session."])
        expect_live_token(page)

    other = page.context.new_page()
    with steps("with no session left, the first tab offers a new one"):
        other.goto(server.url + "/codex/chatkit")
        other.get_by_role("button", name="Close session").click()
        expect(other.get_by_role("button", name="Start session")).to_be_visible()
        expect(page.get_by_role("button", name="Start session")).to_be_visible(timeout=15_000)
        expect(toasts(page)).to_contain_text(
            ["Your Codex session has ended. Start a new one to continue."]
        )


def test_a_lapsed_login_is_refreshed_once_and_the_token_keeps_coming(
    page: Page, serve, watch, steps
):
    server = serve(CHATKIT_TOKEN_TTL=5)
    create_verified_user(server, "refresh@example.com")
    watch.expect(r"status of 401")  # the token request that finds the login gone
    traffic: list[tuple[str, int, str]] = []
    page.on(
        "response",
        lambda response: traffic.append(
            (
                response.url.removeprefix(server.url).split("?")[0],
                response.status,
                response.request.headers.get("authorization", ""),
            )
        ),
    )

    with steps("log in and start"):
        log_in(page, server, "refresh@example.com")
        start_session(page)
        expect_live_token(page)

    with steps("the login session cookie disappears; the refresh cookie remains"):
        page.context.clear_cookies(name="session")
        names = {cookie["name"] for cookie in page.context.cookies()}
        assert "session" not in names and "refresh_token" in names
        seen = len(traffic)

    with steps("the next refresh logs in again through /api/auth/refresh"):
        token = "/api/codex/chatkit/token"
        for _ in range(100):  # up to 20 s: the next scheduled refresh comes within 4 s
            after = traffic[seen:]
            if any(path == token and status == 200 for path, status, _ in after):
                break
            page.wait_for_timeout(200)
        after = [entry for entry in after if entry[0] in (token, "/api/auth/refresh")]
        assert [(path, status) for path, status, _ in after] == [
            (token, 401),
            ("/api/auth/refresh", 200),
            (token, 200),
        ]
        assert after[-1][2].startswith("Bearer ")  # the retry carries the fresh access token
        expect_live_token(page)
        expect(page).to_have_url(re.compile(r"/codex/chatkit$"))


def test_a_rate_limited_token_shows_the_toast_and_waits(page: Page, serve, watch, steps):
    server = serve(CHATKIT_TOKEN_TTL=5, RATELIMIT_TOKEN="1/minute")
    create_verified_user(server, "tokens@example.com")
    watch.expect(r"status of 429")

    with steps("log in and start"):
        log_in(page, server, "tokens@example.com")
        start_session(page)
        expect_live_token(page, issued=1)

    with steps("the refresh is rate limited"):
        expect(toasts(page)).to_have_text([BUSY], timeout=15_000)
        expect(token_status(page)).to_have_text(
            re.compile(r"^Codex is busy; trying again in \d+ seconds\.$")
        )
        expect(page.locator("[data-chatkit-area]")).to_have_attribute("data-tokens-issued", "1")


def tab_to(page: Page, target, presses: int = 25) -> None:
    for _ in range(presses):
        if target.evaluate("element => document.activeElement === element"):
            return
        page.keyboard.press("Tab")
    expect(target).to_be_focused()


def test_the_pages_work_from_the_keyboard(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "keys@example.com")
    log_in(page, server, "keys@example.com")

    with steps("the skip link comes first"):
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    with steps("tab to Start session and press Enter"):
        start = page.get_by_role("button", name="Start session")
        tab_to(page, start)
        outline = start.evaluate("button => getComputedStyle(button).outlineStyle")
        assert outline == "solid"  # the focus ring is visible
        page.keyboard.press("Enter")
        # Focus follows the swap to the new panel's heading.
        expect(page.get_by_role("heading", name="Demo agent")).to_be_focused()
        expect_live_token(page, issued=1)

    with steps("close a session from the history with the keyboard"):
        page.goto(server.url + "/codex/sessions")
        row = page.locator(".sessions-table tbody tr").first
        tab_to(page, row.get_by_role("button", name="Close"))
        page.keyboard.press("Enter")
        expect(row).to_contain_text("Closed")
        expect(row).to_be_focused()  # not lost to the page body with the removed button


def test_phone_layout_has_no_horizontal_scroll(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "phone@example.com")
    page.set_viewport_size({"width": 360, "height": 740})
    log_in(page, server, "phone@example.com")
    start_session(page)
    for path in ("/codex/chatkit", "/codex/sessions"):
        with steps(f"phone {path}"):
            page.goto(server.url + path)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow == 0, f"{path} scrolls sideways by {overflow}px"


FAKE_CHATKIT = """
customElements.define("openai-chatkit", class extends HTMLElement {
  setOptions(options) {
    const api = options.api;
    Object.assign(this.dataset, {
      apiUrl: api.url, domainKey: api.domainKey, initialThread: options.initialThread,
    });
    if (!options.initialThread) {
      this.textContent = "Fake ChatKit on a new thread";
      return;
    }
    // What ChatKit does first when it resumes a thread: ask its server for it.
    api.fetch(api.url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({type: "threads.get_by_id", params: {thread_id: options.initialThread}}),
    }).then((response) => {
      this.dataset.status = String(response.status);
      return response.json();
    }).then((thread) => {
      this.dataset.fetchedThread = thread.id;
      const change = {detail: {threadId: thread.id}};
      this.dispatchEvent(new CustomEvent("chatkit.thread.change", change));
      const failure = {detail: {error: new Error("stand-in")}};
      this.dispatchEvent(new CustomEvent("chatkit.error", failure));
      this.textContent = "Fake ChatKit resumed its thread";
    });
  }
});
"""


@contextmanager
def chatkit_cdn(tmp_path: Path, script: str) -> Iterator[str]:
    """A stand-in ChatKit CDN on its own loopback origin; yields the script's URL."""
    assets = tmp_path / "chatkit-cdn"
    assets.mkdir()
    (assets / "chatkit.js").write_text(script)
    port = free_port()
    cdn = subprocess.Popen(
        [str(VENV_BIN / "python"), "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=assets,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/chatkit.js"
    try:
        wait_for_http(url, process=cdn)
        yield url
    finally:
        cdn.terminate()
        cdn.wait()


def test_the_chatkit_component_resumes_the_thread_through_codexwebs_runtime(
    page: Page, serve, watch, tmp_path
):
    """With CHATKIT_SCRIPT_URL the page loads the component from that origin (allowed by the
    CSP) in custom-server mode: api.url is codexweb's /chatkit, the domain key is passed on,
    initialThread is the session's thread, and the component's fetch reaches /chatkit with a
    Bearer token the runtime accepts. Its errors and thread changes reach the server's log."""
    with chatkit_cdn(tmp_path, FAKE_CHATKIT) as script_url:
        server = serve(
            CHATKIT_SCRIPT_URL=script_url,
            CHATKIT_DOMAIN_KEY="domain_pk_local",
            CHATKIT_DEMO_WORD_DELAY=0,
        )
        create_verified_user(server, "component@example.com")
        log_in(page, server, "component@example.com")
        start_session(page)
        expect(page.locator("openai-chatkit")).to_have_text("Fake ChatKit on a new thread")
        session_id = page.locator("[data-chatkit-area]").get_attribute("data-session-id")
        token = page.request.get(
            server.url + f"/api/codex/chatkit/token?session_id={session_id}"
        ).json()["token"]
        said = page.request.post(
            server.url + "/chatkit",
            data={
                "type": "threads.create",
                "params": {
                    "input": {
                        "content": [{"type": "input_text", "text": "Hello"}],
                        "attachments": [],
                        "inference_options": {},
                    }
                },
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        thread_id = re.search(r'"thread":\{"id":"([^"]+)"', said.text()).group(1)

        page.goto(server.url + f"/codex/chatkit/sessions/{session_id}")  # resume after a reload
        component = page.locator("openai-chatkit")
        expect(component).to_have_text("Fake ChatKit resumed its thread")
        assert component.get_attribute("data-api-url") == "/chatkit"
        assert component.get_attribute("data-domain-key") == "domain_pk_local"
        assert component.get_attribute("data-initial-thread") == thread_id
        assert component.get_attribute("data-status") == "200"
        assert component.get_attribute("data-fetched-thread") == thread_id
        expect(page.locator("[data-conversation]")).to_have_count(0)
        for _ in range(50):  # the events are posted in the background
            log = server.log()
            if "client.chatkit.thread.changed" in log and "client.chatkit.error" in log:
                break
            page.wait_for_timeout(100)
        assert "client.chatkit.thread.changed" in log and "client.chatkit.error" in log


def test_the_back_button_never_shows_a_bare_partial(page: Page, serve, watch, steps):
    server = serve(RATELIMIT_SESSION_CREATE="100/minute")
    create_verified_user(server, "history@example.com")
    log_in(page, server, "history@example.com")
    rows = page.locator(".sessions-table tbody tr")
    nav = page.get_by_role("navigation", name="Main")

    with steps("21 closed sessions make two pages of history"):
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        headers = {"X-CSRFToken": csrf}
        for _ in range(21):
            created = page.request.post(
                server.url + "/api/codex/sessions",
                data={"placement": "dashboard", "agent_id": "agent_123"},
                headers=headers,
            )
            assert created.status == 201, created.text()
            session_id = created.json()["session_id"]
            closed = page.request.post(
                f"{server.url}/api/codex/sessions/{session_id}/close", headers=headers
            )
            assert closed.status == 200

    with steps("page through the history (an htmx swap that pushes the URL)"):
        page.goto(server.url + "/codex/sessions")
        expect(rows).to_have_count(20)
        page.get_by_role("link", name="Older sessions").click()
        expect(page).to_have_url(re.compile(r"/codex/sessions\?cursor="))
        expect(rows).to_have_count(1)

    with steps("leave, then come back with the back button: a whole page"):
        nav.get_by_role("link", name="ChatKit").click()
        expect(page).to_have_url(server.url + "/codex/chatkit")
        page.go_back()
        expect(page).to_have_url(re.compile(r"/codex/sessions\?cursor="))
        expect(nav).to_be_visible()
        expect(page.get_by_role("heading", name="Your sessions")).to_be_visible()
        expect(rows).to_have_count(1)

    with steps("back once more: the first page, whole"):
        page.go_back()
        expect(page).to_have_url(server.url + "/codex/sessions")
        expect(nav).to_be_visible()
        expect(rows).to_have_count(20)


def test_starting_a_session_that_exists_offers_to_resume_it(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "twice@example.com")
    log_in(page, server, "twice@example.com")
    other = page.context.new_page()
    # Chrome logs every 4xx answer to a request; this 409 carries the card we want.
    watch.expect(r"status of 409")

    with steps("another tab starts the session first"):
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        other.goto(server.url + "/codex/chatkit")
        start_session(other)

    with steps("this tab's start answers 409 with the existing session's card"):
        page.get_by_role("button", name="Start session").click()
        card = page.locator(".session-card")
        expect(card.get_by_role("button", name="Resume session")).to_be_visible()
        expect(toasts(page)).to_have_text(["You already have an active session there: resume it."])
        card.get_by_role("button", name="Resume session").click()
        expect_live_token(page)
        assert page.locator("[data-chatkit-area]").get_attribute(
            "data-session-id"
        ) == other.locator("[data-chatkit-area]").get_attribute("data-session-id")


FAKE_CHATKIT_CUSTOM = """
customElements.define("openai-chatkit", class extends HTMLElement {
  setOptions(options) {
    const api = options.api;
    this.dataset.domainKey = api.domainKey;
    api.fetch(api.url + "/threads", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({op: "threads.create"}),
    }).then((response) => response.json()).then((body) => {
      this.dataset.seen = body.authorizations.join(" | ");
      this.textContent = "Fake ChatKit talked to its server";
    });
  }
});
"""


class _FakeChatKitServer(ThreadingHTTPServer):
    """A self-hosted ChatKit server stand-in: CORS for the page's origin; the first request
    is refused with 401 (an expired token), later ones echo the Authorization they got."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeChatKitHandler)
        self.authorizations: list[str] = []
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"


class _FakeChatKitHandler(BaseHTTPRequestHandler):
    server: _FakeChatKitServer

    def log_message(self, *args) -> None:
        pass

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Headers", "authorization, content-type")
        self.send_header("Access-Control-Allow-Methods", "POST")

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(204)
        self._cors()
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.authorizations.append(self.headers.get("Authorization", ""))
        first = len(self.server.authorizations) == 1
        body = json.dumps({"authorizations": self.server.authorizations}).encode()
        self.send_response(401 if first else 200)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_self_hosted_chatkit_server_gets_the_token_as_bearer(page: Page, serve, watch, tmp_path):
    """With CHATKIT_API_URL the component's requests carry the token as Bearer; a 401 from
    that server (token expired mid-chat) is answered with a fresh token, once."""
    chatkit_server = _FakeChatKitServer()
    threading.Thread(target=chatkit_server.serve_forever, daemon=True).start()
    watch.expect(r"status of 401")  # the fake server's refusal of the first request
    try:
        with chatkit_cdn(tmp_path, FAKE_CHATKIT_CUSTOM) as script_url:
            server = serve(
                CHATKIT_SCRIPT_URL=script_url,
                CHATKIT_API_URL=chatkit_server.origin + "/chatkit",
                CHATKIT_DOMAIN_KEY="domain_pk_test",
            )
            create_verified_user(server, "selfhosted@example.com")
            log_in(page, server, "selfhosted@example.com")
            start_session(page)
            component = page.locator("openai-chatkit")
            expect(component).to_have_text("Fake ChatKit talked to its server")
            assert component.get_attribute("data-domain-key") == "domain_pk_test"
            first, second = chatkit_server.authorizations
            assert first.startswith("Bearer ey") and second.startswith("Bearer ey")
            assert first != second  # the retry after the 401 carried a fresh token
    finally:
        chatkit_server.shutdown()
        chatkit_server.server_close()


def test_without_javascript_the_forms_still_work(browser, serve, tmp_path):
    server = serve()
    create_verified_user(server, "nojs@example.com")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, server, "nojs@example.com")
        page.get_by_role("button", name="Start session").click()
        expect(page).to_have_url(re.compile(r"/codex/chatkit/sessions/cxs_"))
        expect(page.get_by_role("heading", name="Demo agent")).to_be_visible()
        expect(page.get_by_text("The live conversation needs JavaScript")).to_be_visible()
        expect(page.get_by_role("button", name="Close session")).to_be_visible()

        page.goto(server.url + "/codex/chatkit")
        page.get_by_role("button", name="Resume session").click()
        expect(page).to_have_url(re.compile(r"/codex/chatkit/sessions/cxs_"))

        page.get_by_role("button", name="Close session").click()
        expect(page).to_have_url(server.url + "/codex/chatkit")
        expect(page.get_by_text("Session closed.")).to_be_visible()
        expect(page.get_by_role("button", name="Start session")).to_be_visible()

        page.get_by_role("link", name="Sessions").click()
        expect(page.locator(".sessions-table tbody tr")).to_have_count(1)
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/login"))
    finally:
        context.close()
