"""`/codex/chatkit` and its partials (CONTRACT.md §6): anonymous, unverified and verified
renderings, the session panel's start / resume / close, one URL with two renderings."""

from __future__ import annotations

import re

import pytest

from codexweb.codex import sessions
from codexweb.extensions import db
from codexweb.models import User

from .pages_support import (
    AGENT,
    PLACEMENT,
    Browser,
    close_session,
    is_full_page,
    open_session,
    stored_status,
    toast,
    user_in,
)


@pytest.fixture
def browser(client, user) -> Browser:
    return Browser(client, user)


@pytest.fixture
def pending_browser(client, unverified_user) -> Browser:
    return Browser(client, unverified_user)


def current_session_id(app, user) -> str | None:
    with app.app_context():
        found = sessions.resolve_current(db.session.get(User, user.id))
        return found.id if found else None


# Anonymous -----------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page_and_back(client):
    response = client.get("/codex/chatkit")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/codex/chatkit"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/codex/chatkit"),
        ("post", "/codex/chatkit/sessions"),
        ("get", "/codex/chatkit/sessions/cxs_whatever"),
        ("post", "/codex/chatkit/sessions/cxs_whatever/close"),
        ("get", "/codex/sessions"),
    ],
)
def test_anonymous_htmx_requests_get_hx_redirect_not_a_swapped_login_page(client, method, path):
    browser = Browser(client)
    if method == "get":
        response = browser.hx_get(path)
    else:
        response = browser.hx_post(path, {"agent_id": AGENT, "placement": PLACEMENT})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?next=/codex/chatkit"
    assert response.get_data(as_text=True) == ""


# Unverified ----------------------------------------------------------------------------------


def test_unverified_users_see_the_verify_banner_and_no_session_controls(pending_browser):
    response = pending_browser.get("/codex/chatkit")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert is_full_page(html)
    assert ">Verify your email</h2>" in html
    assert "pending@example.com" in html
    assert re.search(r'hx-post="/codex/verify-email/resend"', html)
    assert ">Resend verification email</button>" in html
    for control in ("Start session", "Resume session", "Close session", "data-chatkit-area"):
        assert control not in html


def test_unverified_htmx_request_gets_the_banner_partial(pending_browser):
    response = pending_browser.hx_get("/codex/chatkit")
    html = response.get_data(as_text=True)
    assert not is_full_page(html)
    assert '<section id="verify-banner"' in html
    assert "<nav" not in html


def test_resend_confirms_in_place_over_htmx(pending_browser, outbox):
    response = pending_browser.hx_post("/codex/verify-email/resend")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.startswith('<section id="verify-banner"')
    assert "A new link is on its way to pending@example.com" in html
    assert ">Resend verification email</button>" in html  # can ask again
    assert [message.to for message in outbox] == [["pending@example.com"]]
    assert "/verify-email/" in outbox[0].body


def test_resend_without_javascript_redirects_with_a_message(pending_browser, outbox):
    response = pending_browser.post("/codex/verify-email/resend")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"
    page = pending_browser.get("/codex/chatkit").get_data(as_text=True)
    assert "A new verification email is on its way to pending@example.com." in page
    assert len(outbox) == 1


def test_resend_for_an_already_verified_user_refreshes_the_page(browser, outbox):
    response = browser.hx_post("/codex/verify-email/resend")
    assert response.headers["HX-Refresh"] == "true"
    assert outbox == []


def test_resend_shares_its_budget_with_the_api(app_factory):
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_RESEND="1/hour")
    owner = user_in(app, "slow@example.com", verified=False)
    browser = Browser(app.test_client(), owner)
    api = browser.client.post(
        "/api/auth/verify-email/resend", headers={"X-CSRFToken": browser.csrf()}
    )
    assert api.status_code == 202
    response = browser.hx_post("/codex/verify-email/resend")
    assert response.status_code == 429
    assert re.fullmatch(
        r"Too many verification emails asked for\. Try again in (59|60) minutes\.|"
        r"Too many verification emails asked for\. Try again in 1 hour\.",
        toast(response)["message"],
    )


def test_unverified_users_cannot_start_sessions_through_the_page(app, pending_browser):
    response = pending_browser.hx_post(
        "/codex/chatkit/sessions", {"agent_id": AGENT, "placement": PLACEMENT}
    )
    assert response.status_code == 403
    assert toast(response)["message"] == "Verify your email address to use Codex."


def test_resend_needs_a_csrf_token(pending_browser):
    response = pending_browser.client.post(
        "/codex/verify-email/resend", headers=pending_browser.htmx_headers()
    )
    assert response.status_code == 403
    assert "CSRF" in toast(response)["message"]


# Verified: the session panel -------------------------------------------------------------------


def test_without_a_session_the_start_form_offers_the_configured_choices(browser):
    html = browser.get("/codex/chatkit").get_data(as_text=True)
    assert 'hx-post="/codex/chatkit/sessions"' in html
    assert '<label for="agent_id">Agent</label>' in html
    assert '<label for="placement">Placement</label>' in html
    assert '<option value="agent_123">Demo agent</option>' in html
    assert '<option value="developer-workbench">developer-workbench</option>' in html
    assert '<option value="dashboard">dashboard</option>' in html
    assert ">Start session</button>" in html
    assert "Verify your email" not in html


def test_starting_over_htmx_swaps_in_the_chatkit_area(app, browser, user):
    response = browser.hx_post(
        "/codex/chatkit/sessions", {"agent_id": AGENT, "placement": PLACEMENT}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert not is_full_page(html)
    session_id = current_session_id(app, user)
    assert session_id
    assert f'data-session-id="{session_id}"' in html
    assert 'data-token-url="/api/codex/chatkit/token"' in html
    assert 'data-current-url="/api/codex/sessions/current"' in html
    assert 'data-refresh-url="/api/auth/refresh"' in html
    assert 'data-events-url="/api/codex/events"' in html
    assert f'data-session-url="/api/codex/sessions/{session_id}"' in html
    assert ">Close session</button>" in html
    assert "Secure access renews automatically" in html
    assert "<summary>Details</summary>" in html
    assert '<h3 id="conversation-title">Conversation</h3>' in html


def test_starting_without_javascript_redirects_to_the_session(app, browser, user):
    response = browser.post("/codex/chatkit/sessions", {"agent_id": AGENT, "placement": PLACEMENT})
    session_id = current_session_id(app, user)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/codex/chatkit/sessions/{session_id}"
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert is_full_page(page)
    assert f'data-session-id="{session_id}"' in page


def test_starting_twice_shows_the_existing_session_card(app, browser, user):
    existing = open_session(app, user)
    response = browser.hx_post(
        "/codex/chatkit/sessions", {"agent_id": AGENT, "placement": PLACEMENT}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 409
    assert f"/codex/chatkit/sessions/{existing}" in html
    assert ">Resume session</button>" in html
    assert toast(response) == {
        "message": "You already have an active session there: resume it.",
        "level": "info",
    }
    assert current_session_id(app, user) == existing


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"agent_id": "agent_nope", "placement": PLACEMENT}, "agent_id", "Unknown agent."),
        ({"agent_id": AGENT, "placement": "kitchen"}, "placement", "Unknown placement"),
        ({}, "agent_id", "Unknown agent."),
    ],
)
def test_invalid_choices_are_shown_inline(app, browser, user, form, field, message):
    response = browser.hx_post("/codex/chatkit/sessions", form)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    error = re.search(rf'<p id="{field}-error" class="field-error">([^<]+)</p>', html)
    assert error and message in error.group(1)
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', html, re.S)
    assert current_session_id(app, user) is None


def test_the_panel_shows_the_current_session_card(app, browser, user):
    session_id = open_session(app, user, placement="developer-workbench")
    html = browser.get("/codex/chatkit").get_data(as_text=True)
    card = re.search(r'<section class="card session-card".*?</section>', html, re.S).group(0)
    assert "Demo agent" in card
    assert "<dt>Placement</dt><dd>developer-workbench</dd>" in card
    assert "<dt>Started</dt>" in card and "<dt>Expires</dt>" in card
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"', card)
    assert f'hx-get="/codex/chatkit/sessions/{session_id}"' in card
    assert ">Resume session</button>" in card
    assert f'hx-post="/codex/chatkit/sessions/{session_id}/close"' in card
    assert ">Close session</button>" in card
    assert "Start session</button>" not in html


def test_resume_shows_the_chatkit_area(app, browser, user):
    session_id = open_session(app, user)
    response = browser.hx_get(f"/codex/chatkit/sessions/{session_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert not is_full_page(html)
    assert "data-chatkit-area" in html
    assert f'data-session-id="{session_id}"' in html
    assert f'data-placement="{PLACEMENT}"' in html and f'data-agent-id="{AGENT}"' in html


def test_resuming_someone_elses_session_is_not_found(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    theirs = open_session(app, stranger)
    assert browser.hx_get(f"/codex/chatkit/sessions/{theirs}").status_code == 404
    page = browser.get(f"/codex/chatkit/sessions/{theirs}")
    assert page.status_code == 404
    assert "Session not found" in page.get_data(as_text=True)


def test_resuming_an_ended_session_offers_a_new_one(app, browser, user):
    session_id = open_session(app, user)
    close_session(app, user, session_id)
    response = browser.hx_get(f"/codex/chatkit/sessions/{session_id}")
    assert response.status_code == 200
    assert ">Start session</button>" in response.get_data(as_text=True)
    assert toast(response)["message"] == "That session has ended. Start a new one."


def test_closing_swaps_back_to_the_start_form(app, browser, user):
    session_id = open_session(app, user)
    response = browser.hx_post(f"/codex/chatkit/sessions/{session_id}/close")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert ">Start session</button>" in html
    assert toast(response) == {"message": "Session closed.", "level": "success"}
    assert stored_status(app, session_id) == "closed"


def test_closing_without_javascript_redirects_with_a_message(app, browser, user):
    session_id = open_session(app, user)
    response = browser.post(f"/codex/chatkit/sessions/{session_id}/close")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"
    assert "Session closed." in browser.get("/codex/chatkit").get_data(as_text=True)
    assert stored_status(app, session_id) == "closed"


def test_closing_someone_elses_session_is_not_found(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    theirs = open_session(app, stranger)
    response = browser.hx_post(f"/codex/chatkit/sessions/{theirs}/close")
    assert response.status_code == 404
    assert stored_status(app, theirs) == "active"


def test_closing_needs_a_csrf_token(app, browser, user):
    session_id = open_session(app, user)
    response = browser.client.post(
        f"/codex/chatkit/sessions/{session_id}/close", headers=browser.htmx_headers()
    )
    assert response.status_code == 403
    assert stored_status(app, session_id) == "active"


# One URL, two renderings ------------------------------------------------------------------------


def test_one_url_answers_the_page_or_the_partial(browser):
    page = browser.get("/codex/chatkit")
    partial = browser.hx_get("/codex/chatkit")
    assert is_full_page(page.get_data(as_text=True))
    assert '<div id="codex-panel"' in page.get_data(as_text=True)
    assert not is_full_page(partial.get_data(as_text=True))
    assert '<div id="codex-panel"' not in partial.get_data(as_text=True)
    assert "Start session" in partial.get_data(as_text=True)
    for response in (page, partial):
        assert "HX-Request" in response.headers["Vary"]
        assert "Content-Security-Policy" in response.headers


# The ChatKit component -----------------------------------------------------------------


def test_with_a_chatkit_script_the_component_talks_to_the_runtime(app_factory, make_user):
    app = app_factory(CHATKIT_SCRIPT_URL="https://cdn.example.com/chatkit/chatkit.js")
    owner = user_in(app, "ck@example.com")
    with app.app_context():
        session_id = sessions.open_session(owner, placement=PLACEMENT, agent_id=AGENT).id
    client = Browser(app.test_client(), owner).client
    response = client.get(f"/codex/chatkit/sessions/{session_id}")
    html = response.get_data(as_text=True)
    assert '<script src="https://cdn.example.com/chatkit/chatkit.js" async></script>' in html
    # The local provider: codexweb's own /chatkit is the component's custom server.
    assert (
        '<openai-chatkit data-chatkit-element data-api-url="/chatkit" data-domain-key="">'
        "</openai-chatkit>"
    ) in html
    assert "data-conversation" not in html
    assert "https://cdn.example.com" in response.headers["Content-Security-Policy"]


def test_a_self_hosted_chatkit_server_is_handed_to_the_component(app_factory):
    app = app_factory(
        CHATKIT_SCRIPT_URL="https://cdn.example.com/chatkit/chatkit.js",
        CHATKIT_API_URL="https://chat.example.com/chatkit",
        CHATKIT_DOMAIN_KEY="domain_pk_test",
    )
    owner = user_in(app, "own@example.com")
    with app.app_context():
        session_id = sessions.open_session(owner, placement=PLACEMENT, agent_id=AGENT).id
    client = Browser(app.test_client(), owner).client
    html = client.get(f"/codex/chatkit/sessions/{session_id}").get_data(as_text=True)
    assert re.search(
        r'<openai-chatkit data-chatkit-element data-api-url="https://chat.example.com/chatkit"'
        r' data-domain-key="domain_pk_test"></openai-chatkit>',
        html,
    )


def test_without_a_chatkit_script_the_area_speaks_to_people(app, browser, user):
    session_id = open_session(app, user)
    html = browser.get(f"/codex/chatkit/sessions/{session_id}").get_data(as_text=True)
    assert '<h3 id="conversation-title">Conversation</h3>' in html
    assert f'href="/codex/sessions/{session_id}">read this session\'s transcript</a>' in html
    assert "<openai-chatkit" not in html
    assert '<script src="https://' not in html
    # No configuration keys or internal ids outside the "Details" disclosure.
    visible = re.sub(r"<details.*?</details>", "", html, flags=re.S)
    visible = re.sub(r"<[^>]+>", " ", visible)  # attributes (data-session-id …) are not copy
    assert "CHATKIT_" not in visible and "not configured" not in visible
    assert "cxs_" not in visible and "cks_" not in visible
    assert "tokens issued this visit" not in html


# Rate limits ------------------------------------------------------------------------------


def rate_limited_start(app_factory):
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_SESSION_CREATE="1/minute")
    owner = user_in(app, "busy@example.com", verified=True)
    browser = Browser(app.test_client(), owner)
    form = {"agent_id": AGENT, "placement": PLACEMENT}
    assert browser.hx_post("/codex/chatkit/sessions", form).status_code == 200
    return browser.hx_post("/codex/chatkit/sessions", form)


def test_a_rate_limited_start_shows_the_busy_toast(app_factory):
    response = rate_limited_start(app_factory)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    message = toast(response)
    assert message["level"] == "error"
    assert re.fullmatch(r"Codex is busy, please retry in \d+ seconds", message["message"])


def test_the_busy_toast_names_exactly_the_retry_after_seconds(app_factory):
    response = rate_limited_start(app_factory)
    seconds = int(response.headers["Retry-After"])
    assert toast(response)["message"] == f"Codex is busy, please retry in {seconds} seconds"


def test_the_page_and_the_api_share_one_session_create_budget(app_factory):
    """Alternating between POST /api/codex/sessions and the Start form buys no extra starts."""
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_SESSION_CREATE="1/minute")
    owner = user_in(app, "shared@example.com", verified=True)
    with app.app_context():
        from tests.conftest import access_token_for

        bearer = {"Authorization": f"Bearer {access_token_for(owner.id)}"}
    browser = Browser(app.test_client(), owner)
    created = app.test_client().post(
        "/api/codex/sessions", json={"agent_id": AGENT, "placement": PLACEMENT}, headers=bearer
    )
    assert created.status_code == 201
    other_placement = next(p for p in app.config["CODEX_PLACEMENTS"] if p != PLACEMENT)
    response = browser.hx_post(
        "/codex/chatkit/sessions", {"agent_id": AGENT, "placement": other_placement}
    )
    assert response.status_code == 429
    assert toast(response)["message"].startswith("Codex is busy, please retry in ")


def test_the_start_form_offers_only_placements_an_agent_may_use(app_factory):
    app = app_factory(
        CODEX_PLACEMENTS=["dashboard", "ops"],
        CODEX_AGENTS={"agent_123": {"name": "Demo agent", "placements": ["dashboard"]}},
    )
    owner = user_in(app, "form@example.com", verified=True)
    page = Browser(app.test_client(), owner).get("/codex/chatkit").get_data(as_text=True)
    assert '<option value="dashboard"' in page
    assert 'value="ops"' not in page


def test_without_javascript_the_area_says_what_it_needs_instead_of_waiting(app, browser, user):
    session_id = open_session(app, user)
    html = browser.get(f"/codex/chatkit/sessions/{session_id}").get_data(as_text=True)
    assert "<h3>The live conversation needs JavaScript</h3>" in html
    assert f'<a href="/codex/sessions/{session_id}">read this session\'s transcript</a>' in html
    # The live parts stay hidden until static/token_keeper.js runs and shows them.
    assert '<div class="token-status" data-token-status data-state="loading" hidden>' in html
    assert "Fetching a ChatKit token" not in html
