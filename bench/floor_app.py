"""The floor under the API targets: two endpoints' own work and nothing else.

Served by the same `gunicorn.conf.py` as codexweb and the baseline, on the same seeded SQLite
database and the same wrk requests as codexweb's token and `/current` scenarios (`python -m
bench.floor api`). `GET /api/codex/sessions/current` checks the access token and reads the
caller's live login and current session in one SELECT (its activity write is coalesced in
codexweb too, so none here). `GET /api/codex/chatkit/token` does only what the contract
requires of a mint, with the cheapest tools there are:

1. checks the caller's access token (itsdangerous, the same format and secret as codexweb);
2. one SELECT on the DB-API: the login is live, the account enabled and verified, the Codex
   session the caller's and active, and its live ChatKit record;
3. one conditional UPDATE of the record's token count, and a commit;
4. signs the ChatKit JWT (joserfc, Ed25519, the same claims);
5. answers the same JSON.

No ORM, no flask-login, no rate limit, no event log, no metrics, no security headers, no
touch of the session's activity, no error pages: not a product (it answers 404 for anything
wrong), only what no implementation of the endpoint can skip. What codexweb costs above it is
what its framework choices and its other duties cost.

Environment: FLOOR_DATABASE (a SQLite file), FLOOR_SECRET_KEY, FLOOR_ACCESS_TOKEN_TTL.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

from flask import Flask, abort, jsonify, request
from itsdangerous import BadData, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.jwk import OKPKey

from codexweb.auth.tokens import ACCESS_SALT

TOKEN_TTL = timedelta(minutes=10)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's DateTime stores time on SQLite

# The same question as codexweb's caller check and its mint's load, in one statement.
MINT_ROWS = """
SELECT s.id, s.agent_id, s.placement, s.expires_at, r.id
FROM logins l
JOIN users u ON u.id = l.user_id
JOIN codex_sessions s ON s.user_id = u.id
JOIN chatkit_sessions r ON r.codex_session_id = s.id AND r.status = 'active'
WHERE l.id = ? AND u.id = ? AND l.ended_at IS NULL
  AND (l.expires_at IS NULL OR l.expires_at > ?) AND u.disabled_at IS NULL
  AND u.email_verified_at IS NOT NULL
  AND s.id = ? AND s.deleted_at IS NULL AND s.status = 'active' AND s.expires_at > ?
ORDER BY r.created_at DESC LIMIT 1
"""
# `/current`: the caller's live login and their newest active session in the slot.
CURRENT_SESSION = """
SELECT s.id, s.status, s.placement, s.agent_id, s.context, s.metadata, s.created_at,
       s.last_active_at, s.expires_at, s.closed_at, s.thread_id
FROM logins l
JOIN users u ON u.id = l.user_id
JOIN codex_sessions s ON s.user_id = u.id
WHERE l.id = ? AND u.id = ? AND l.ended_at IS NULL
  AND (l.expires_at IS NULL OR l.expires_at > ?) AND u.disabled_at IS NULL
  AND u.email_verified_at IS NOT NULL
  AND s.placement = ? AND s.agent_id = ? AND s.deleted_at IS NULL
  AND s.status = 'active' AND s.expires_at > ?
ORDER BY s.created_at DESC LIMIT 1
"""
COUNT_TOKEN = """
UPDATE chatkit_sessions SET tokens_issued = tokens_issued + 1, last_token_at = ?
WHERE id = ? AND EXISTS (
  SELECT 1 FROM codex_sessions WHERE id = ? AND status = 'active' AND expires_at > ?)
"""

app = Flask(__name__)
serializer = URLSafeTimedSerializer(os.environ.get("FLOOR_SECRET_KEY", "floor"), salt=ACCESS_SALT)
access_ttl = int(os.environ.get("FLOOR_ACCESS_TOKEN_TTL", "7200"))
signing_key = OKPKey.generate_key("Ed25519", private=True)
connections = threading.local()


def connection() -> sqlite3.Connection:
    """One connection per thread, opened once, with codexweb's pragmas."""
    if not hasattr(connections, "db"):
        db = sqlite3.connect(os.environ["FLOOR_DATABASE"], isolation_level=None)
        for pragma in ("journal_mode=WAL", "busy_timeout=5000", "synchronous=NORMAL"):
            db.execute(f"PRAGMA {pragma}")
        connections.db = db
    return connections.db


@app.get("/healthz")
def healthz():
    connection().execute("SELECT 1")
    return {"status": "ok"}


def access_claim() -> dict:
    header = request.headers.get("Authorization", "")
    try:
        return serializer.loads(header.removeprefix("Bearer "), max_age=access_ttl)
    except BadData:
        abort(401)


def iso(stored: str | None) -> str | None:
    if stored is None:
        return None
    moment = datetime.strptime(stored, SQLITE_TIME)
    return moment.isoformat(timespec="seconds") + "Z"


@app.get("/api/codex/sessions/current")
def current():
    claim = access_claim()
    stamp = datetime.now(UTC).replace(tzinfo=None).strftime(SQLITE_TIME)
    query = (request.args.get("placement", ""), request.args.get("agent_id", ""))
    row = connection().execute(CURRENT_SESSION, (claim["lid"], claim["uid"], stamp, *query, stamp))
    row = row.fetchone()
    if row is None:
        abort(404)
    session_id, status, placement, agent_id, context, metadata, *times, thread_id = row
    created, last_active, expires, closed = (iso(value) for value in times)
    response = jsonify(
        session_id=session_id,
        status=status,
        placement=placement,
        agent_id=agent_id,
        context=json.loads(context or "{}"),
        metadata=json.loads(metadata or "{}"),
        created_at=created,
        last_active_at=last_active,
        expires_at=expires,
        closed_at=closed,
        thread_id=thread_id,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@app.get("/api/codex/chatkit/token")
def token():
    claim = access_claim()
    now = datetime.now(UTC)
    stamp = now.replace(tzinfo=None).strftime(SQLITE_TIME)
    session_id = request.args.get("session_id", "")
    db = connection()
    row = db.execute(MINT_ROWS, (claim["lid"], claim["uid"], stamp, session_id, stamp)).fetchone()
    if row is None:
        abort(404)
    session_id, agent_id, placement, session_expires, record_id = row
    db.execute("BEGIN IMMEDIATE")
    counted = db.execute(COUNT_TOKEN, (stamp, record_id, session_id, stamp)).rowcount
    db.execute("COMMIT")
    if counted != 1:
        abort(404)
    limit = datetime.strptime(session_expires, SQLITE_TIME).replace(tzinfo=UTC)
    expires = min(now + TOKEN_TTL, limit)
    claims = {
        "iss": request.host_url.rstrip("/"),
        "aud": "chatkit",
        "sub": claim["uid"],
        "sid": session_id,
        "cks": record_id,
        "agent_id": agent_id,
        "placement": placement,
        "lid": claim["lid"],
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    header = {"alg": "EdDSA", "kid": "floor", "typ": "JWT"}
    response = jsonify(
        token=jwt.encode(header, claims, signing_key, algorithms=["EdDSA"]),
        expires_at=expires.isoformat().replace("+00:00", "Z"),
        session_id=session_id,
        chatkit_session_id=record_id,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
