"""Single sign-on against a real OpenID provider on loopback (tests/node/oidc_provider.mjs).

The app runs under Flask's test client; the provider's own login and consent pages are
walked over HTTP (`OidcProvider.sign_in`), and the provider's answer is handed back to the
app's `/auth/callback` as the browser would. Nothing of authlib is mocked: discovery, JWKS,
the token exchange with PKCE and the ID token checks all really happen.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from codexweb.auth import sso
from codexweb.auth.accounts import find_user_by_email
from codexweb.auth.redaction import redact_token_paths
from codexweb.auth.sso import SsoError
from codexweb.extensions import db
from codexweb.models import Identity
from tests.auth_support import form_csrf_token, link_token, meta_csrf_token
from tests.conftest import TEST_PASSWORD, DrainingOutbox
from tests.servers import free_port

pytestmark = pytest.mark.services

BASE = "http://localhost"  # PUBLIC_BASE_URL of the test apps


@pytest.fixture
def sso_app(app_factory, oidc_provider):
    """`sso_app(**config)`: an app using a client of its own at the test provider."""

    def build(**config):
        client = oidc_provider.register_client(BASE)
        return app_factory(**{**client.config(oidc_provider.issuer), **config})

    return build


@pytest.fixture
def account(oidc_provider):
    """`account(email, verified=True)`: a fresh account at the provider; its login name."""

    def make(email: str, *, verified: bool = True) -> str:
        login = f"sub-{uuid.uuid4().hex[:12]}"
        oidc_provider.add_account(login, email, email_verified=verified)
        return login

    return make


def sign_in(client, provider, login: str, *, start: str = "/auth/oidc/login", cancel=False):
    """Start at the app, sign in at the provider, return the app's answer to the callback."""
    started = client.get(start)
    assert started.status_code == 302, started.get_data(as_text=True)
    back = provider.sign_in(started.headers["Location"], login, cancel=cancel)
    assert back.startswith(BASE + "/auth/callback?"), back
    return client.get(back.removeprefix(BASE))


def owner_id(client) -> str:
    return client.get("/api/auth/me").get_json()["user"]["id"]


def whoami(client) -> str | None:
    response = client.get("/api/auth/me")
    return response.get_json()["user"]["email"] if response.status_code == 200 else None


def page_text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


def identities_of(app, email: str) -> list[tuple[str, str]]:
    with app.app_context():
        user = find_user_by_email(email)
        return [(i.issuer, i.subject) for i in sso.list_identities(user)] if user else []


# The authorization request ---------------------------------------------------------------


def test_login_redirects_with_pkce_state_and_nonce(sso_app, oidc_provider):
    app = sso_app()
    response = app.test_client().get("/auth/oidc/login")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == oidc_provider.issuer
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == BASE + "/auth/callback"
    assert query["scope"] == "openid email profile"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"]


def test_posted_forms_may_continue_to_the_provider(sso_app, oidc_provider):
    """Log out and link post a form that redirects to the provider: CSP must allow it."""
    policy = sso_app().test_client().get("/login").headers["Content-Security-Policy"]
    assert f"form-action 'self' {oidc_provider.issuer};" in policy


def test_discovery_waits_for_the_first_sign_in(app_factory):
    """An unreachable provider neither stops the app from starting nor serving pages."""
    app = app_factory(
        OIDC_ISSUER=f"http://127.0.0.1:{free_port()}",
        OIDC_CLIENT_ID="codexweb",
        OIDC_CLIENT_SECRET="secret",
        OIDC_NAME="Acme ID",
    )
    client = app.test_client()
    assert "Sign in with Acme ID" in page_text(client.get("/login"))
    response = client.get("/auth/oidc/login")
    assert response.status_code == 503
    assert "We could not reach Acme ID" in page_text(response)
    assert "Try again in a few minutes" in page_text(response)


def test_without_configuration_there_is_no_single_sign_on(app):
    client = app.test_client()
    assert "Sign in with" not in page_text(client.get("/login"))
    assert client.get("/auth/oidc/login").status_code == 404
    assert client.get("/auth/callback?code=x&state=y").status_code == 404


# First and later logins ------------------------------------------------------------------


def test_first_login_creates_a_verified_account_and_the_next_reuses_it(
    sso_app, oidc_provider, account, events
):
    app = sso_app()
    client = app.test_client()
    login = account("ada@corp.example", verified=True)
    response = sign_in(client, oidc_provider, login, start="/auth/oidc/login?next=/codex/sessions")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/sessions"
    assert client.get("/api/auth/me").get_json()["user"]["email_verified"] is True
    assert whoami(client) == "ada@corp.example"
    assert events.named("auth.login.succeeded")[-1]["method"] == "oidc"

    # The provider changes the address: the identity still finds the same account.
    oidc_provider.add_account(login, "ada.lovelace@corp.example", email_verified=True)
    other_browser = app.test_client()
    assert sign_in(other_browser, oidc_provider, login).headers["Location"] == "/codex/chatkit"
    assert whoami(other_browser) == "ada@corp.example"
    assert identities_of(app, "ada@corp.example") == [(oidc_provider.issuer, login)]


def test_unvouched_address_gets_an_unverified_account_and_the_usual_mail(
    sso_app, oidc_provider, account
):
    app = sso_app()
    outbox = app.extensions["mailman"].outbox = DrainingOutbox(app)
    client = app.test_client()
    sign_in(client, oidc_provider, account("bob@corp.example", verified=False))
    assert client.get("/api/auth/me").get_json()["user"]["email_verified"] is False
    assert [message.to for message in outbox] == [["bob@corp.example"]]
    assert "/verify-email/" in outbox[0].body


def test_an_sso_account_has_no_usable_password(sso_app, oidc_provider, account):
    app = sso_app()
    sign_in(app.test_client(), oidc_provider, account("carol@corp.example"))
    for password in ("", "!", TEST_PASSWORD):
        response = app.test_client().post(
            "/api/auth/login", json={"email": "carol@corp.example", "password": password}
        )
        assert response.status_code in (401, 422)


def test_unsafe_next_is_ignored(sso_app, oidc_provider, account):
    app = sso_app()
    response = sign_in(
        app.test_client(),
        oidc_provider,
        account("dan@corp.example"),
        start="/auth/oidc/login?next=//evil.example/",
    )
    assert response.headers["Location"] == "/codex/chatkit"


# Linking to existing password accounts -----------------------------------------------------


def test_vouched_address_in_an_allowed_domain_links_the_password_account(
    sso_app, oidc_provider, account, make_user
):
    app = sso_app(OIDC_ALLOWED_DOMAINS=["corp.example"])
    existing = make_user("erin@corp.example")
    client = app.test_client()
    login = account("Erin@Corp.example", verified=True)
    assert sign_in(client, oidc_provider, login).status_code == 302
    assert client.get("/api/auth/me").get_json()["user"]["id"] == existing.id
    assert identities_of(app, "erin@corp.example") == [(oidc_provider.issuer, login)]
    # The owner proved the address with our own link: their password still works too.
    login_json = {"email": "erin@corp.example", "password": TEST_PASSWORD}
    assert app.test_client().post("/api/auth/login", json=login_json).status_code == 200


def test_linking_an_unverified_account_takes_the_registrants_way_in(
    sso_app, oidc_provider, account, make_user
):
    """Someone registered the address before its owner came and never verified it: the
    provider's word makes the account the owner's, and the registrant's password and
    logins stop working (a pre-registered account must not be a back door)."""
    app = sso_app(OIDC_ALLOWED_DOMAINS=["corp.example"])
    existing = make_user("gil@corp.example", verified=False)
    registrant = app.test_client()
    password_login = {"email": "gil@corp.example", "password": TEST_PASSWORD}
    granted = registrant.post("/api/auth/login", json=password_login)
    assert granted.status_code == 200
    registrants_bearer = {"Authorization": f"Bearer {granted.get_json()['access_token']}"}

    owner = app.test_client()
    assert sign_in(owner, oidc_provider, account("gil@corp.example")).status_code == 302
    me = owner.get("/api/auth/me").get_json()["user"]
    assert me["id"] == existing.id
    assert me["email_verified"] is True  # the provider vouched for this very address
    assert registrant.get("/api/auth/me", headers=registrants_bearer).status_code == 401
    assert registrant.post("/api/auth/refresh").status_code == 401
    refused = app.test_client().post("/api/auth/login", json=password_login)
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "invalid_credentials"
    assert whoami(owner) == "gil@corp.example"  # the owner's own login is the one left


def test_the_registrants_provider_account_and_email_change_do_not_outlive_the_owner(
    sso_app, oidc_provider, account, make_user
):
    """Before the owner came, the registrant linked a provider account of their own and asked
    to move the address to theirs: neither may survive the owner proving the address."""
    app = sso_app(OIDC_ALLOWED_DOMAINS=["corp.example"])
    outbox = app.extensions["mailman"].outbox = DrainingOutbox(app)
    make_user("ida@corp.example", verified=False)
    registrant = app.test_client()
    log_in_on_the_page(registrant, "ida@corp.example")
    csrf = form_csrf_token(registrant.get("/auth/oidc/link").get_data(as_text=True))
    started = registrant.post(
        "/auth/oidc/link", data={"csrf_token": csrf, "password": TEST_PASSWORD}
    )
    own = account("mallory@elsewhere.example")
    back = oidc_provider.sign_in(started.headers["Location"], own)
    assert registrant.get(back.removeprefix(BASE)).status_code == 302
    asked = registrant.post(
        "/api/auth/email/change",
        json={"password": TEST_PASSWORD, "new_email": "mallory@elsewhere.example"},
        headers={"X-CSRFToken": meta_csrf_token(registrant.get("/account").get_data(as_text=True))},
    )
    assert asked.status_code == 202, asked.get_data(as_text=True)
    (to_new,) = [m for m in outbox if m.to == ["mallory@elsewhere.example"]]
    change_link = link_token(to_new, "confirm-email")

    owner = app.test_client()
    assert sign_in(owner, oidc_provider, account("ida@corp.example")).status_code == 302
    assert whoami(owner) == "ida@corp.example"
    assert own not in [subject for _, subject in identities_of(app, "ida@corp.example")]

    confirmed = app.test_client().get(f"/confirm-email/{change_link}")
    assert confirmed.status_code == 400  # the link died with the registrant's password
    later = app.test_client()  # the registrant's provider account now opens nothing of Ida's
    sign_in(later, oidc_provider, own)
    assert whoami(later) != "ida@corp.example"
    with app.app_context():
        assert find_user_by_email("mallory@elsewhere.example").id != owner_id(owner)
    assert whoami(owner) == "ida@corp.example"  # the address did not move


def test_an_account_linked_to_another_user_of_the_provider_is_not_linked_by_address(
    sso_app, oidc_provider, account
):
    """The provider gave the address to someone new (a recycled mailbox): the address must
    not hand them the first holder's account."""
    app = sso_app(OIDC_ALLOWED_DOMAINS=["corp.example"], OIDC_NAME="Acme ID")
    first = account("hal@corp.example")
    assert sign_in(app.test_client(), oidc_provider, first).status_code == 302
    newcomer = app.test_client()
    response = sign_in(newcomer, oidc_provider, account("hal@corp.example"))
    assert response.status_code == 409
    text = page_text(response)
    assert "An account with this email address already exists" in text
    assert "It already signs in with a different Acme ID account" in text
    assert whoami(newcomer) is None
    assert identities_of(app, "hal@corp.example") == [(oidc_provider.issuer, first)]

    # The address is the newcomer's now (or the provider re-created the user): the
    # administrator removes the old link, and the next sign-in links afresh.
    result = app.test_cli_runner().invoke(args=["users", "unlink-sso", "hal@corp.example"])
    assert result.output == "removed 1 single sign-on link(s) from hal@corp.example\n"
    second = account("hal@corp.example")
    assert sign_in(newcomer, oidc_provider, second).status_code == 302
    assert whoami(newcomer) == "hal@corp.example"
    assert identities_of(app, "hal@corp.example") == [(oidc_provider.issuer, second)]


@pytest.mark.parametrize(
    ("verified", "allowed", "reason"),
    [
        (False, ["corp.example"], "has not confirmed that this address is yours"),
        (True, ["other.example"], "not connected to Acme ID automatically"),
    ],
)
def test_existing_account_is_not_linked_without_vouching_and_an_allowed_domain(
    sso_app, oidc_provider, account, make_user, verified, allowed, reason
):
    app = sso_app(OIDC_ALLOWED_DOMAINS=allowed, OIDC_NAME="Acme ID")
    make_user("fay@corp.example")
    client = app.test_client()
    response = sign_in(client, oidc_provider, account("fay@corp.example", verified=verified))
    assert response.status_code == 409
    text = page_text(response)
    assert "An account with this email address already exists" in text
    assert reason in text
    assert "Log in with your password, then link Acme ID from your account page." in text
    assert whoami(client) is None
    assert identities_of(app, "fay@corp.example") == []


def test_a_logged_in_user_links_an_identity_with_any_address(
    sso_app, oidc_provider, account, make_user
):
    app = sso_app(OIDC_NAME="Acme ID")
    make_user("gus@home.example")
    client = app.test_client()
    login_json = {"email": "gus@home.example", "password": TEST_PASSWORD}
    assert client.post("/api/auth/login", json=login_json).status_code == 200
    # `/api/auth/login` opens no login session; log in through the page like a browser.
    page = client.get("/login").get_data(as_text=True)
    client.post(
        "/login",
        data={**login_json, "csrf_token": form_csrf_token(page)},
    )
    confirm = client.get("/auth/oidc/link")
    assert "Link your Acme ID account" in page_text(confirm)
    csrf = form_csrf_token(confirm.get_data(as_text=True))
    started = client.post("/auth/oidc/link", data={"csrf_token": csrf, "password": TEST_PASSWORD})
    assert started.status_code == 302
    login = account("gus@corp.example", verified=False)
    back = oidc_provider.sign_in(started.headers["Location"], login)
    response = client.get(back.removeprefix(BASE))
    assert response.status_code == 302
    assert identities_of(app, "gus@home.example") == [(oidc_provider.issuer, login)]
    # From now on the identity signs in to that account.
    other_browser = app.test_client()
    sign_in(other_browser, oidc_provider, login)
    assert whoami(other_browser) == "gus@home.example"


def log_in_on_the_page(client, email: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    form = {"email": email, "password": TEST_PASSWORD, "csrf_token": form_csrf_token(page)}
    assert client.post("/login", data=form).status_code == 302


@pytest.mark.parametrize(
    ("password", "message"),
    [("not the password at all", "The password is wrong."), ("", "Enter your password.")],
)
def test_linking_needs_the_password(sso_app, make_user, events, password, message):
    """A linked identity outlives a password reset: a borrowed browser session (someone
    else at an unlocked machine) must not be enough to add one."""
    app = sso_app(OIDC_NAME="Acme ID")
    make_user("kim@home.example")
    client = app.test_client()
    log_in_on_the_page(client, "kim@home.example")
    csrf = form_csrf_token(client.get("/auth/oidc/link").get_data(as_text=True))
    refused = client.post("/auth/oidc/link", data={"csrf_token": csrf, "password": password})
    assert refused.status_code == 422
    assert "Location" not in refused.headers  # not sent to the provider
    text = page_text(refused)
    assert message in text
    assert "Link your Acme ID account" in text
    assert identities_of(app, "kim@home.example") == []
    assert len(events.named("auth.password.confirm_failed")) == (1 if password else 0)


def test_an_account_without_a_password_links_with_a_confirmation_only(
    sso_app, oidc_provider, account
):
    """An account made by single sign-on has no password to ask for."""
    app = sso_app(OIDC_NAME="Acme ID")
    client = app.test_client()
    first = account("lee@corp.example")
    assert sign_in(client, oidc_provider, first).status_code == 302
    confirm = client.get("/auth/oidc/link")
    assert "Your password" not in page_text(confirm)
    csrf = form_csrf_token(confirm.get_data(as_text=True))
    started = client.post("/auth/oidc/link", data={"csrf_token": csrf})
    assert started.status_code == 302
    second = account("lee.other@corp.example")
    back = oidc_provider.sign_in(started.headers["Location"], second)
    assert client.get(back.removeprefix(BASE)).status_code == 302
    assert identities_of(app, "lee@corp.example") == [
        (oidc_provider.issuer, first),
        (oidc_provider.issuer, second),
    ]


def test_linking_must_be_posted_with_a_csrf_token(sso_app, make_user):
    app = sso_app()
    make_user("hal@home.example")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    client.post(
        "/login",
        data={
            "email": "hal@home.example",
            "password": TEST_PASSWORD,
            "csrf_token": form_csrf_token(page),
        },
    )
    refused = client.post("/auth/oidc/link")
    assert refused.status_code == 403
    assert "Location" not in refused.headers


def test_identities_list_link_and_unlink(sso_app, make_user):
    app = sso_app()
    with_password = make_user("ivy@home.example")
    with app.app_context():
        user = db.session.get(type(with_password), with_password.id)
        identity = sso.link_identity(user, issuer="https://id.example", subject="42")
        assert sso.link_identity(user, issuer="https://id.example", subject="42").id == identity.id
        assert [i.id for i in sso.list_identities(user)] == [identity.id]
        other = make_user("jon@home.example")
        other = db.session.get(type(other), other.id)
        with pytest.raises(SsoError) as taken:
            sso.link_identity(other, issuer="https://id.example", subject="42")
        assert taken.value.code == "identity_in_use"
        with pytest.raises(SsoError) as not_theirs:
            sso.unlink_identity(other, identity.id)
        assert not_theirs.value.code == "identity_not_found"
        sso.unlink_identity(user, identity.id)
        assert sso.list_identities(user) == []


def test_unlinking_is_refused_without_a_password(sso_app, oidc_provider, account):
    app = sso_app()
    sign_in(app.test_client(), oidc_provider, account("kim@corp.example"))
    with app.app_context():
        user = find_user_by_email("kim@corp.example")
        (identity,) = sso.list_identities(user)
        with pytest.raises(SsoError) as refused:
            sso.unlink_identity(user, identity.id)
        assert refused.value.code == "password_required"
        assert db.session.get(Identity, identity.id) is not None


# PASSWORD_LOGIN_ENABLED=false --------------------------------------------------------------


def test_without_password_login_sso_is_the_only_way_in(sso_app, oidc_provider, account, make_user):
    app = sso_app(PASSWORD_LOGIN_ENABLED=False, OIDC_NAME="Acme ID")
    make_user("lee@home.example")
    api = app.test_client()
    client = app.test_client()
    login_page = client.get("/login")
    text = page_text(login_page)
    assert "Sign in with Acme ID" in text
    assert 'type="password"' not in login_page.get_data(as_text=True)
    assert "Create account" not in text and "Forgot your password?" not in text
    api_calls = [
        ("/api/auth/login", {"email": "lee@home.example", "password": TEST_PASSWORD}),
        ("/api/auth/register", {"email": "new@home.example", "password": TEST_PASSWORD}),
        ("/api/auth/password/forgot", {"email": "lee@home.example"}),
        ("/api/auth/password/reset", {"token": "x", "password": TEST_PASSWORD}),
    ]
    for path, body in api_calls:
        response = api.post(path, json=body)
        assert response.status_code == 403, path
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "password_login_disabled"
    for path in ("/register", "/forgot-password", "/reset-password/some-token"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "Password login is turned off" in page_text(response)
    csrf = meta_csrf_token(login_page.get_data(as_text=True))
    refused = client.post(
        "/login", data={"email": "lee@home.example", "password": TEST_PASSWORD, "csrf_token": csrf}
    )
    assert refused.status_code == 403
    assert whoami(client) is None

    sign_in(client, oidc_provider, account("mia@corp.example"))
    assert whoami(client) == "mia@corp.example"


# Failures ----------------------------------------------------------------------------------


def test_cancelled_sign_in_says_so(sso_app, oidc_provider, account):
    app = sso_app(OIDC_NAME="Acme ID")
    client = app.test_client()
    response = sign_in(client, oidc_provider, account("ned@corp.example"), cancel=True)
    assert response.status_code == 403
    assert "Sign-in was cancelled" in page_text(response)
    assert "Sign in with Acme ID again" in page_text(response)
    assert whoami(client) is None


def test_a_provider_that_keeps_the_address_back_gets_a_page_saying_so(sso_app, oidc_provider):
    app = sso_app(OIDC_NAME="Acme ID")
    login = f"sub-{uuid.uuid4().hex[:12]}"
    oidc_provider.add_account(login, None, email_verified=False)
    response = sign_in(app.test_client(), oidc_provider, login)
    assert response.status_code == 502
    assert "Acme ID did not tell us your email address" in page_text(response)


def test_the_dev_server_log_drops_the_callback_query():
    line = '127.0.0.1 - - "GET /auth/callback?code=abc&state=def HTTP/1.1" 302 -'
    assert redact_token_paths(line) == (
        '127.0.0.1 - - "GET /auth/callback?[redacted] HTTP/1.1" 302 -'
    )


def test_a_callback_without_its_state_is_refused(sso_app):
    app = sso_app()
    response = app.test_client().get("/auth/callback?code=stolen&state=made-up")
    assert response.status_code == 400
    assert "This sign-in has expired or was already used" in page_text(response)


def test_a_replayed_callback_is_refused(sso_app, oidc_provider, account):
    app = sso_app()
    client = app.test_client()
    started = client.get("/auth/oidc/login")
    back = oidc_provider.sign_in(started.headers["Location"], account("oz@corp.example"))
    assert client.get(back.removeprefix(BASE)).status_code == 302
    client.post("/logout", data={"csrf_token": "x"})  # whatever happens, replay next
    replay = client.get(back.removeprefix(BASE))
    assert replay.status_code == 400
    assert "already used" in page_text(replay)


def test_a_callback_in_another_browser_is_refused(sso_app, oidc_provider, account):
    app = sso_app()
    started = app.test_client().get("/auth/oidc/login")
    back = oidc_provider.sign_in(started.headers["Location"], account("pam@corp.example"))
    victim = app.test_client()
    assert victim.get(back.removeprefix(BASE)).status_code == 400
    assert whoami(victim) is None


@pytest.mark.parametrize("mode", ["signature", "audience", "nonce"])
def test_a_forged_id_token_is_refused(sso_app, oidc_provider, account, mode, events):
    app = sso_app()
    client = app.test_client()
    started = client.get("/auth/oidc/login")
    back = oidc_provider.sign_in(started.headers["Location"], account("quin@corp.example"))
    oidc_provider.tamper_next_id_token(mode)
    response = client.get(back.removeprefix(BASE))
    assert response.status_code == 400
    assert "This sign-in could not be verified" in page_text(response)
    assert whoami(client) is None
    assert [event["reason"] for event in events.named("auth.sso.failed")] == ["invalid_id_token"]
    with app.app_context():
        assert find_user_by_email("quin@corp.example") is None


def test_no_code_or_token_reaches_a_log(sso_app, oidc_provider, account, caplog, events):
    caplog.set_level(logging.DEBUG)
    app = sso_app()
    client = app.test_client()
    started = client.get("/auth/oidc/login")
    back = oidc_provider.sign_in(started.headers["Location"], account("rae@corp.example"))
    client.get(back.removeprefix(BASE))
    query = parse_qs(urlsplit(back).query)
    secrets = [query["code"][0], query["state"][0]]
    # The test's own stand-in browser (httpx) logs its URLs; everything else is the app's.
    lines = [
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    ]
    lines += events.lines()
    assert secrets and not [line for line in lines if any(s in line for s in secrets)]


def test_logout_ends_the_login_at_the_provider_too(sso_app, oidc_provider, account):
    app = sso_app()
    client = app.test_client()
    sign_in(client, oidc_provider, account("sam@corp.example"))
    page = client.get("/logout").get_data(as_text=True)
    response = client.post("/logout", data={"csrf_token": form_csrf_token(page)})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        oidc_provider.issuer + "/session/end"
    )
    query = parse_qs(location.query)
    assert query["post_logout_redirect_uri"] == [BASE + "/login"]
    assert query["client_id"] == [app.config["OIDC_CLIENT_ID"]]
    assert whoami(client) is None
