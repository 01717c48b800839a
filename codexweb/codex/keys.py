"""ChatKit signing keys: Ed25519 keys in the database, encrypted at rest, one set per deployment.

Every host and worker of a deployment signs with and publishes the same keys because they
live in the shared database (`signing_keys`), not in an instance folder. The private half is
sealed with AES-GCM under a key derived (HKDF-SHA256) from `KEY_ENCRYPTION_KEY`, or from
`SECRET_KEY` when that is not set; the row's kid is the associated data, so a sealed key
cannot be moved to another row.

- The current key is the newest one not retired; a rotation retires the others. A retired
  key stays published until tokens it signed (at most `CHATKIT_TOKEN_TTL`) have expired.
- Creating the first key is race-free: keys are numbered, the number is the primary key, and
  whoever inserts number 1 second loses the insert and reads the winner's key.
- Each process caches the keys for `CHATKIT_KEYS_CACHE_SECONDS` (30 s): a rotation on one
  host is signed with and published by the others within that time.
- Keys written by earlier versions into `CHATKIT_KEYS_DIR` are imported on first use (or by
  `flask keys import`), so tokens in flight keep verifying across the upgrade.
- Writes run on their own connection and commit at once: a key never depends on (or waits
  for) the caller's transaction.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, current_app, has_app_context
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet, OKPKey
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..clock import utcnow
from ..extensions import db
from ..logging import emit
from ..models import SigningKeyRecord

ALGORITHM = "EdDSA"
# CONTRACT.md §4 fixes `alg: EdDSA` (RFC 8037), which every JOSE library verifies; joserfc
# warns on each use because RFC 9864 prefers the newer name `Ed25519`.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

SEALED_PREFIX = "v1:"
_HKDF_INFO = b"codexweb signing keys v1"
_table = SigningKeyRecord.__table__


class KeysUndecryptable(RuntimeError):
    """Stored keys that neither KEY_ENCRYPTION_KEY nor SECRET_KEY opens."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: OKPKey
    created_at: datetime
    sequence: int
    retired_at: datetime | None = None

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


# Sealing ---------------------------------------------------------------------------------


def _derive(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return hkdf.derive(secret.encode())


def sealing_keys(config) -> list[bytes]:
    """The keys that may open stored keys, the one that seals new ones first.

    With KEY_ENCRYPTION_KEY set, keys sealed earlier under SECRET_KEY still open, so an
    operator can set it first, re-seal (`flask keys reseal`), then change SECRET_KEY.
    """
    secrets_in_order = [config.get("KEY_ENCRYPTION_KEY"), config["SECRET_KEY"]]
    return [_derive(secret) for secret in secrets_in_order if secret]


def seal(private_jwk: dict[str, Any], kid: str, key: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(private_jwk).encode(), kid.encode())
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(text: str, kid: str, keys: list[bytes]) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(text.removeprefix(SEALED_PREFIX))
    for key in keys:
        try:
            return json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], kid.encode()))
        except InvalidTag:
            continue
    raise KeysUndecryptable(
        f"signing key {kid} cannot be decrypted: SECRET_KEY changed without "
        "KEY_ENCRYPTION_KEY? Restore the previous SECRET_KEY, or set KEY_ENCRYPTION_KEY to it "
        "(docs/DEPLOY.md §11)"
    )


# The store -------------------------------------------------------------------------------


class _Cache:
    """One process's copy of the keys and when it was loaded (monotonic seconds)."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] | None = None
        self.loaded_at = 0.0
        # The published keys as a verifier's key set, and the kids it was built from.
        self.verifying: tuple[tuple[str, ...], KeySet] | None = None
        # When a token's unknown kid last made the process read the keys afresh.
        self.reread_for_unknown_kid_at = float("-inf")


UNKNOWN_KID_REREAD_SECONDS = 1.0


class KeyStore:
    def __init__(self, app: Flask) -> None:
        self.app = app
        config = app.config
        self.token_ttl = timedelta(seconds=config["CHATKIT_TOKEN_TTL"])
        self.cache_seconds = float(config["CHATKIT_KEYS_CACHE_SECONDS"])
        self.import_dir = Path(config["CHATKIT_KEYS_DIR"]) if config["CHATKIT_KEYS_DIR"] else None
        self._cache: _Cache = app.extensions.setdefault("codexweb.signing_keys", _Cache())

    # reading

    def keys(self) -> list[SigningKey]:
        """Every stored key, oldest first (cached for CHATKIT_KEYS_CACHE_SECONDS)."""
        cache = self._cache
        keys = cache.keys
        if keys is not None and time.monotonic() - cache.loaded_at < self.cache_seconds:
            return keys
        return self.refresh()

    def refresh(self) -> list[SigningKey]:
        """Read the keys from the database now, and cache them.

        The cached copy is replaced, never emptied first: the other threads of the process
        keep using it meanwhile instead of each reading and unsealing the keys too.
        """
        with self._engine().connect() as connection:
            keys = self._load(connection)
        cache = self._cache
        cache.keys, cache.loaded_at = keys, time.monotonic()
        return keys

    def current(self) -> SigningKey:
        """The key that signs: created (or imported from CHATKIT_KEYS_DIR) on first use."""
        live = [key for key in self.keys() if key.retired_at is None]
        if not live:
            self._create_first_key()
            self.forget()
            live = [key for key in self.keys() if key.retired_at is None]
        return live[-1]

    def published(self, now: datetime | None = None) -> list[SigningKey]:
        """The keys a verifier may still meet: the current one and recently retired ones."""
        now = now or utcnow()
        return [key for key in self.keys() if self._still_published(key, now)]

    def verifying_keys(self) -> KeySet:
        """The published public keys as a joserfc key set, as a third party builds it.

        Built once per published set and process (the runtime verifies a token on every
        message), and again when a rotation or a prune changes the published kids, which this
        cache sees within CHATKIT_KEYS_CACHE_SECONDS.
        """
        self.current()
        published = self.published()
        kids = tuple(key.kid for key in published)
        cached = self._cache.verifying
        if cached is None or cached[0] != kids:
            key_set = KeySet.import_key_set({"keys": [key.public_jwk() for key in published]})
            cached = self._cache.verifying = (kids, key_set)
        return cached[1]

    def reread_verifying_keys(self) -> KeySet | None:
        """The verifying keys read afresh, for a token naming a kid this process does not
        know: another host may have rotated since the keys were cached, and its tokens must
        verify here at once, not a cache lifetime later. None when such a reread happened
        less than `UNKNOWN_KID_REREAD_SECONDS` ago, so tokens naming made-up kids cannot
        make every request read the database."""
        now = time.monotonic()
        if now - self._cache.reread_for_unknown_kid_at < UNKNOWN_KID_REREAD_SECONDS:
            return None
        self._cache.reread_for_unknown_kid_at = now
        self.refresh()
        return self.verifying_keys()

    def _still_published(self, key: SigningKey, now: datetime) -> bool:
        return key.retired_at is None or key.retired_at + self.token_ttl > now

    # writing

    def rotate(self) -> SigningKey:
        """A new current key; the others are retired now and pruned once unpublished."""
        for _ in range(5):  # another host rotating at the same instant took the number
            try:
                with self._engine().begin() as connection:
                    now = utcnow()
                    # The write first: on SQLite it takes the lock before the read below.
                    connection.execute(
                        update(_table).where(_table.c.retired_at.is_(None)).values(retired_at=now)
                    )
                    self._insert(connection, self._max_sequence(connection) + 1, now)
                break
            except IntegrityError:
                continue
        else:
            raise RuntimeError("could not rotate the signing key: too many concurrent rotations")
        self.prune()
        return self.current()

    def prune(self, now: datetime | None = None) -> list[str]:
        """Delete retired keys whose tokens have all expired; returns their kids."""
        self.forget()
        now = now or utcnow()
        gone = [key.kid for key in self.keys() if not self._still_published(key, now)]
        if gone:
            with self._engine().begin() as connection:
                connection.execute(_table.delete().where(_table.c.kid.in_(gone)))
            self.forget()
        return gone

    def import_directory(self, directory: Path | None = None) -> list[str]:
        """Import the JWK files earlier versions kept in `CHATKIT_KEYS_DIR`; returns new kids.

        Into an empty store the files keep their order (the newest signs). Into a store that
        has keys already (another host's folder), they come in retired: published for one
        token lifetime, so that host's tokens in flight still verify, then pruned.
        """
        directory = directory or self.import_dir
        files = _read_key_files(directory)
        added: list[str] = []
        if files:
            with self._engine().begin() as connection:
                known = set(connection.scalars(select(_table.c.kid)))
                sequence = self._max_sequence(connection)
                now = utcnow()
                for index, (kid, jwk, created_at) in enumerate(files):
                    if kid in known:
                        continue
                    newest = index == len(files) - 1
                    retired_at = now if known else None if newest else files[index + 1][2]
                    sequence += 1
                    self._insert(connection, sequence, created_at, jwk=jwk, retired_at=retired_at)
                    added.append(kid)
        self.forget()
        if added:
            emit("chatkit.keys.imported", kids=added, directory=str(directory))
        return added

    def reseal(self) -> int:
        """Seal every key again under KEY_ENCRYPTION_KEY (or SECRET_KEY when that is unset)."""
        opening = sealing_keys(self.app.config)
        with self._engine().begin() as connection:
            rows = connection.execute(select(_table.c.kid, _table.c.sealed_jwk)).all()
            for kid, sealed in rows:
                jwk = unseal(sealed, kid, opening)
                connection.execute(
                    update(_table)
                    .where(_table.c.kid == kid)
                    .values(sealed_jwk=seal(jwk, kid, opening[0]))
                )
        self.forget()
        return len(rows)

    def forget(self) -> None:
        """Drop this process's cached copy, so the next read sees the database."""
        self._cache.keys = None

    # the database

    def _engine(self) -> Engine:
        if has_app_context() and current_app._get_current_object() is self.app:
            return db.engine
        with self.app.app_context():
            return db.engine

    def _load(self, connection: Connection) -> list[SigningKey]:
        rows = connection.execute(select(_table).order_by(_table.c.sequence)).mappings().all()
        opening = sealing_keys(self.app.config)
        return [
            SigningKey(
                kid=row["kid"],
                key=OKPKey.import_key(unseal(row["sealed_jwk"], row["kid"], opening)),
                created_at=row["created_at"],
                sequence=row["sequence"],
                retired_at=row["retired_at"],
            )
            for row in rows
        ]

    @staticmethod
    def _max_sequence(connection: Connection) -> int:
        return connection.scalar(select(func.coalesce(func.max(_table.c.sequence), 0)))

    def _create_first_key(self) -> None:
        try:
            if _read_key_files(self.import_dir):
                self.import_directory()
                return
            with self._engine().begin() as connection:
                # Insert without reading first: the primary key decides who was first.
                self._insert(connection, 1, utcnow())
        except IntegrityError:
            pass  # another worker or host was first: its key is the key

    def _insert(
        self,
        connection: Connection,
        sequence: int,
        created_at: datetime,
        *,
        jwk: dict[str, Any] | None = None,
        retired_at: datetime | None = None,
    ) -> None:
        if jwk is None:
            key = OKPKey.generate_key("Ed25519", private=True)
            jwk = {**key.as_dict(private=True), "kid": key.thumbprint()}
        kid = jwk["kid"]
        connection.execute(
            insert(_table).values(
                sequence=sequence,
                kid=kid,
                created_at=created_at,
                retired_at=retired_at,
                sealed_jwk=seal(jwk, kid, sealing_keys(self.app.config)[0]),
            )
        )


def _read_key_files(directory: Path | None) -> list[tuple[str, dict[str, Any], datetime]]:
    """(kid, private JWK, created_at) of the JWK files earlier versions wrote, oldest first."""
    if directory is None or not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        created_at = datetime.fromisoformat(data["created_at"])
        found.append((int(data["sequence"]), data["jwk"]["kid"], data["jwk"], created_at))
    found.sort(key=lambda entry: entry[0])
    return [(kid, jwk, created_at) for _, kid, jwk, created_at in found]


# The functions the rest of the app calls -------------------------------------------------


def key_store(app: Flask | None = None) -> KeyStore:
    return KeyStore(app or current_app._get_current_object())


def jwks() -> dict[str, Any]:
    """The public keys that verify ChatKit tokens (JWK Set, RFC 7517)."""
    store = key_store()
    store.current()  # a fresh deployment publishes the key its first token will use
    return {"keys": [key.public_jwk() for key in store.published()]}


def verifying_keys() -> KeySet:
    """The published public keys as a key set that verifies ChatKit tokens."""
    return key_store().verifying_keys()


def reread_verifying_keys() -> KeySet | None:
    """The keys read afresh after a token named an unknown kid (None: read too recently)."""
    return key_store().reread_verifying_keys()


def rotate_keys() -> str:
    """Make a new current signing key; returns its kid."""
    return key_store().rotate().kid


def prune_keys() -> list[str]:
    return key_store().prune()


def check_keys_open(app: Flask) -> None:
    """At start: refuse to run when the stored keys cannot be decrypted.

    Publishing nothing (or new keys) would silently break every ChatKit server's verification;
    a failed start names the cause. A database without the table yet (before `db upgrade`)
    or out of reach is not this check's business (/readyz reports it).
    """
    try:
        with app.app_context(), db.engine.connect() as connection:
            row = connection.execute(
                select(_table.c.kid, _table.c.sealed_jwk)
                .where(_table.c.retired_at.is_(None))
                .order_by(_table.c.sequence.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError:
        return
    if row is not None:
        try:
            unseal(row.sealed_jwk, row.kid, sealing_keys(app.config))
        except KeysUndecryptable as error:
            emit("chatkit.keys.undecryptable", logging.CRITICAL, kid=row.kid)
            raise KeysUndecryptable(str(error)) from None
