"""A real OpenID provider for the tests: `tests/node/oidc_provider.mjs` (panva's certified
`oidc-provider`) run by Node on a free loopback port.

`OidcProvider` starts it, registers clients (standard dynamic registration, so every test app
gets its own redirect URI), adds accounts with the claims a test picks, arms the ID token
forgeries, and signs in at the provider's own login and consent pages over HTTP (`sign_in`),
as a browser would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import httpx

from .servers import free_port, stop, wait_for_http

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "oidc_provider.mjs"

_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post">(.*?)</form>', re.S)
_PROMPT = re.compile(r'name="prompt" value="([^"]+)"')


def unavailable_reason() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed (the OpenID provider tests need `node`)"
    if not (NODE_DIR / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: run `npm ci --prefix tests/node`"
    return None


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str

    def config(self, issuer: str) -> dict[str, str]:
        """The codexweb settings that use this client."""
        return {
            "OIDC_ISSUER": issuer,
            "OIDC_CLIENT_ID": self.client_id,
            "OIDC_CLIENT_SECRET": self.client_secret,
        }


class OidcProvider:
    def __init__(self, issuer: str, process: subprocess.Popen, log_path: Path) -> None:
        self.issuer = issuer
        self.process = process
        self.log_path = log_path

    def register_client(self, base_url: str) -> Client:
        """A confidential client for the codexweb at `base_url` (its callback and login)."""
        response = httpx.post(
            self.issuer + "/reg",
            json={
                "redirect_uris": [base_url + "/auth/callback"],
                "post_logout_redirect_uris": [base_url + "/login"],
            },
        )
        response.raise_for_status()
        body = response.json()
        return Client(body["client_id"], body["client_secret"])

    def add_account(self, sub: str, email: str | None, *, email_verified: bool) -> None:
        """An account signing in with login name `sub` (any password)."""
        response = httpx.post(
            self.issuer + "/test/accounts",
            json={"sub": sub, "email": email, "email_verified": email_verified},
        )
        response.raise_for_status()

    def tamper_next_id_token(self, mode: str) -> None:
        """`signature`, `audience` or `nonce`: the next token response carries a forgery."""
        httpx.post(self.issuer + "/test/tamper", json={"mode": mode}).raise_for_status()

    def sign_in(self, authorization_url: str, login: str, *, cancel: bool = False) -> str:
        """Follow `authorization_url` through the provider's login and consent pages as
        `login`; the URL the provider finally sends the browser to (the app's callback).
        `cancel` clicks the pages' Cancel link instead of signing in."""
        with httpx.Client(follow_redirects=False, timeout=20) as browser:
            url = authorization_url
            for _ in range(10):
                if not url.startswith(self.issuer):
                    return url
                response = browser.get(url)
                if response.is_redirect:
                    url = urljoin(url, response.headers["location"])
                    continue
                url = self._submit(browser, url, response.text, login, cancel)
        raise AssertionError("the provider never sent the browser back")

    def _submit(self, browser: httpx.Client, url: str, page: str, login: str, cancel: bool) -> str:
        if cancel:
            match = re.search(r'<a href="([^"]+)">\[ Cancel \]</a>', page)
            assert match, page
            return urljoin(url, unescape(match.group(1)))
        form = _FORM.search(page)
        assert form, f"no form on the provider's page:\n{page}"
        action, fields = urljoin(url, unescape(form.group(1))), form.group(2)
        prompt = _PROMPT.search(fields).group(1)
        data = {"prompt": prompt}
        if prompt == "login":
            data.update(login=login, password="any password")
        response = browser.post(action, data=data)
        assert response.is_redirect, response.text
        return urljoin(action, response.headers["location"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_provider(folder: Path) -> Iterator[OidcProvider]:
    port = free_port()
    log_path = folder / "oidc-provider.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["node", str(SCRIPT)],
            cwd=NODE_DIR,
            env={"PATH": _path(), "OIDC_TEST_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    provider = OidcProvider(f"http://127.0.0.1:{port}", process, log_path)
    try:
        try:
            wait_for_http(
                provider.issuer + "/.well-known/openid-configuration", timeout=60, process=process
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- provider log ---\n{provider.log()}") from error
        yield provider
    finally:
        stop(process)


def _path() -> str:
    return str(Path(shutil.which("node")).parent)
