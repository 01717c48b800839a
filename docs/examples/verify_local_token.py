"""Verify a codexweb ChatKit token the way a self-hosted ChatKit server should.

codexweb's local provider signs each ChatKit token with Ed25519 (`alg: EdDSA`, a `kid` in the
header) and publishes the public keys at `/.well-known/jwks.json`. A ChatKit server that
receives `Authorization: Bearer <token>` fetches that key set (cache it; fetch again when a
token names a `kid` it does not know, which is what a key rotation looks like), checks the
signature, then the claims: issuer, audience, expiry, not-before.

    python docs/examples/verify_local_token.py http://127.0.0.1:5000 "$TOKEN"

prints the verified claims as JSON, or the reason the token is refused (exit status 1).
Needs only `joserfc` (pip install joserfc).
"""

from __future__ import annotations

import json
import sys
import urllib.request
import warnings

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

# joserfc prefers the newer algorithm name "Ed25519" and warns about "EdDSA" on every use.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


def fetch_key_set(base_url: str) -> KeySet:
    if not base_url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {base_url}")
    url = f"{base_url.rstrip('/')}/.well-known/jwks.json"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (scheme checked)
        return KeySet.import_key_set(json.load(response))


def verify(token: str, keys: KeySet, *, issuer: str, audience: str = "chatkit") -> dict:
    """The token's claims if it is genuine and current; raises `JoseError` otherwise."""
    decoded = jwt.decode(token, keys, algorithms=["EdDSA"])  # picks the key by `kid`
    JWTClaimsRegistry(
        leeway=30,  # tolerate a little clock skew between the two servers
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
        sid={"essential": True},  # the Codex session this token belongs to
    ).validate(decoded.claims)
    return decoded.claims


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    base_url, token = argv[1], argv[2]
    # codexweb's issuer is CHATKIT_ISSUER, by default its PUBLIC_BASE_URL.
    issuer = argv[3] if len(argv) == 4 else base_url.rstrip("/")
    try:
        claims = verify(token, fetch_key_set(base_url), issuer=issuer)
    except JoseError as error:
        print(f"refused: {error.error}: {error.description or ''}".rstrip(": "))
        return 1
    print(json.dumps(claims, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
