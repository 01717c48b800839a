"""The OpenID Connect conversation with the provider, through authlib's Flask client.

Authorization code flow with PKCE (S256), `state` and `nonce`; authlib keeps the three in the
login session between the redirect and the callback and checks the ID token's signature
(against the provider's JWKS), `iss`, `aud`, `exp` and `nonce`. Every way this can fail
becomes one `SsoError` code, so the pages can say what happened.

Nothing talks to the provider at start-up: discovery (`<OIDC_ISSUER>/.well-known/
openid-configuration`) runs at the first sign-in and is kept once it succeeded, so an
air-gapped site or a provider that is down never stops codexweb from starting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, Response, current_app, session
from joserfc.errors import JoseError

from ..concurrency import waiting_on_network
from ..logging import emit
from .mail import public_base_url
from .sso import SsoError, sso_configured

CLIENT_NAME = "sso"
CALLBACK_PATH = "/auth/callback"
_PROVIDER_LOGOUT_KEY = "sso_end_session"


def init_app(app: Flask) -> None:
    # authlib logs the PKCE code verifier at DEBUG: never let it reach a log.
    logging.getLogger("authlib").setLevel(logging.WARNING)
    if not sso_configured(app.config):
        return
    oauth = OAuth(app)
    oauth.register(
        CLIENT_NAME,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=discovery_url(app.config["OIDC_ISSUER"]),
        client_kwargs={
            "scope": app.config["OIDC_SCOPES"],
            "code_challenge_method": "S256",
            "default_timeout": float(app.config["OIDC_TIMEOUT"]),
        },
    )


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def redirect_uri() -> str:
    return public_base_url() + CALLBACK_PATH


def _client():
    return current_app.extensions["authlib.integrations.flask_client"].create_client(CLIENT_NAME)


def _metadata() -> dict[str, Any]:
    """The provider's discovery document, fetched once per process and then kept."""
    client = _client()
    try:
        with waiting_on_network():
            metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError):
        _failed("provider_unreachable")
    # OpenID Connect Discovery §4.3: the document must be the configured issuer's own, or
    # ID tokens would be checked against someone else's name.
    configured = str(current_app.config["OIDC_ISSUER"]).rstrip("/")
    if str(metadata.get("issuer", "")).rstrip("/") != configured:
        client.server_metadata.clear()
        _failed("provider_error", detail="discovery_issuer_mismatch")
    return metadata


def authorization_redirect() -> Response:
    """Send the browser to the provider's sign-in page (state, nonce and PKCE kept)."""
    _metadata()
    try:
        return _client().authorize_redirect(redirect_uri())
    except (requests.RequestException, RuntimeError):
        _failed("provider_unreachable")


@dataclass(frozen=True)
class ProviderAnswer:
    """A checked sign-in: who the provider says the user is, and where its logout lives."""

    issuer: str
    claims: dict[str, Any]
    end_session_endpoint: str | None


def complete_authorization() -> ProviderAnswer:
    """The provider's answer at the callback, checked, with the ID token's claims.

    When the ID token carries no address (providers may keep it for the userinfo endpoint),
    the userinfo answer supplies it, but only for the same subject.
    """
    metadata = _metadata()
    client = _client()
    try:
        with waiting_on_network():
            token = client.authorize_access_token()
    except MismatchingStateError:
        _failed("state_mismatch")
    except OAuthError as error:
        code = "access_denied" if error.error == "access_denied" else "provider_error"
        _failed(code, detail=error.error)
    except requests.RequestException:
        _failed("provider_unreachable")
    except (JoseError, ValueError, KeyError):
        _failed("invalid_id_token")
    claims = dict(token.get("userinfo") or {})
    if not claims.get("sub"):
        # No ID token at all: this was not an OpenID Connect answer.
        _failed("invalid_id_token")
    if not claims.get("email"):
        claims = _with_userinfo(client, token, claims)
    return ProviderAnswer(
        issuer=str(metadata["issuer"]),
        claims=claims,
        end_session_endpoint=metadata.get("end_session_endpoint"),
    )


def _with_userinfo(client, token: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
    try:
        with waiting_on_network():
            info = client.userinfo(token=token)
    except (requests.RequestException, OAuthError, ValueError):
        _failed("provider_unreachable")
    if str(info.get("sub")) != str(claims["sub"]):
        _failed("invalid_id_token", detail="userinfo_subject_mismatch")
    return {**claims, "email": info.get("email"), "email_verified": info.get("email_verified")}


def remember_provider_logout(answer: ProviderAnswer) -> None:
    """Keep, with the login session, where this login can end at the provider."""
    if answer.end_session_endpoint:
        session[_PROVIDER_LOGOUT_KEY] = answer.end_session_endpoint


def provider_logout_url() -> str | None:
    """RP-initiated logout: the provider's end-session URL for a login made by single
    sign-on, which sends the browser back to our login page. None for other logins."""
    endpoint = session.get(_PROVIDER_LOGOUT_KEY)
    if not endpoint or not sso_configured(current_app.config):
        return None
    query = urlencode(
        {
            "client_id": current_app.config["OIDC_CLIENT_ID"],
            "post_logout_redirect_uri": public_base_url() + "/login",
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def _failed(code: str, *, detail: str | None = None) -> NoReturn:
    """Log (the code, never a token or the code) and raise."""
    emit("auth.sso.failed", logging.WARNING, reason=code, detail=detail)
    raise SsoError(code)
