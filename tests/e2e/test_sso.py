"""Single sign-on in a real browser: codexweb under gunicorn, the OpenID provider
(tests/node/oidc_provider.mjs) on another loopback port, and its own sign-in pages.

Click "Sign in with …", sign in at the provider, land verified on /codex/chatkit; log out
(which ends the provider's session too) and sign in again into the same account.
"""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from ..servers import free_port

# The provider's development pages load a web font from the internet (offline here) and
# have no favicon.
# have no favicon. The app's own answers are checked separately (`failed_here`).
PROVIDER_PAGE_NOISE = (
    r"fonts\.googleapis\.com|ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED|404 \(Not Found\)"
)


def sign_in_at_provider(page: Page, login: str) -> None:
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()


def current_user_id(page: Page, base_url: str) -> str:
    response = page.request.get(base_url + "/api/auth/me")
    assert response.status == 200, response.text()
    return json.loads(response.text())["user"]["id"]


def test_sign_in_with_sso_lands_verified_and_reuses_the_account(
    page: Page, serve, watch, steps, oidc_provider
):
    watch.expect(PROVIDER_PAGE_NOISE)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    client = oidc_provider.register_client(base_url)
    server = serve(
        port=port,
        PUBLIC_BASE_URL=base_url,
        OIDC_NAME="Acme ID",
        **client.config(oidc_provider.issuer),
    )
    oidc_provider.add_account("tess", "tess@corp.example", email_verified=True)
    failed_here: list[str] = []
    page.on(
        "response",
        lambda response: (
            response.url.startswith(server.url)
            and response.status >= 400
            and failed_here.append(f"{response.status} {response.url}")
        ),
    )

    with steps("the login page offers single sign-on"):
        page.goto(server.url + "/codex/chatkit")
        expect(page).to_have_url(server.url + "/login?next=/codex/chatkit")
        page.get_by_role("link", name="Sign in with Acme ID").click()

    with steps("sign in at the provider"):
        expect(page.locator("input[name=login]")).to_be_visible()
        assert page.url.startswith(oidc_provider.issuer + "/interaction/")
        sign_in_at_provider(page, "tess")
        page.get_by_role("button", name="Continue").click()

    with steps("land verified on the ChatKit page"):
        expect(page).to_have_url(server.url + "/codex/chatkit")
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        expect(page.get_by_text("tess@corp.example")).to_be_visible()
        first_id = current_user_id(page, server.url)

    with steps("log out here and at the provider"):
        page.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="Yes, sign me out").click()
        expect(page).to_have_url(server.url + "/login")

    with steps("sign in again into the same account"):
        page.get_by_role("link", name="Sign in with Acme ID").click()
        sign_in_at_provider(page, "tess")
        # The provider may ask for consent again, since its session ended with the logout.
        consent = page.get_by_role("button", name="Continue")
        landed = page.get_by_role("button", name="Start session")
        expect(consent.or_(landed)).to_be_visible()
        if consent.is_visible():
            consent.click()
        expect(page).to_have_url(server.url + "/codex/chatkit")
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        assert current_user_id(page, server.url) == first_id

    assert failed_here == []
    # gunicorn's access log shows the callback without its query (code and state).
    log = server.log()
    assert "/auth/callback" in log
    assert "code=" not in log and "state=" not in log
