"""`/` and `/codex` (CONTRACT.md §6): a landing page for anonymous visitors, straight to
work for anyone logged in."""

from __future__ import annotations

from .pages_support import Browser, is_full_page


def test_anonymous_visitors_get_a_landing_page_with_both_ways_in(client):
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert is_full_page(html)
    assert "<h1" in html and "Talk to Codex agents in your browser" in html
    main = html[html.index("<main") :]
    assert '<a class="button" href="/register">Create account</a>' in main
    assert '<a class="button button-secondary" href="/login">Log in</a>' in main


def test_logged_in_visitors_go_straight_to_chatkit(client, user):
    response = Browser(client, user).get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"


def test_unverified_visitors_go_to_chatkit_too(client, unverified_user):
    # The verify banner waits for them there.
    response = Browser(client, unverified_user).get("/")
    assert response.headers["Location"] == "/codex/chatkit"


def test_codex_redirects_to_chatkit(client):
    response = client.get("/codex")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"
