"""`GET /healthz` (liveness: the database answers) and `GET /readyz` (readiness: every
dependency a request may need answers), CONTRACT.md §1 and §8."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db, limiter
from .logging import emit

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@limiter.exempt
def healthz():
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        db.session.rollback()
        emit("health.database_unavailable", logging.ERROR, error=type(error).__name__)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")


@bp.get("/readyz")
@limiter.exempt
def readyz():
    """200 when every dependency answers; 503 naming the ones that did not.

    A load balancer takes a host out of rotation on 503, and the body says why, so the
    operator need not guess. Dependencies this instance does not use are "skipped".
    """
    checks = {name: _run(name, check) for name, check in _checks().items()}
    failed = [name for name, result in checks.items() if result == "failed"]
    if failed:
        emit("health.not_ready", logging.ERROR, failed=failed)
    body = {"status": "unavailable" if failed else "ok", "checks": checks, "failed": failed}
    return jsonify(body), 503 if failed else 200


def _checks() -> dict[str, Callable[[], bool] | None]:
    config = current_app.config
    # A storage that limits switched off never use is no dependency, wherever it points.
    uses_storage = config["RATELIMIT_ENABLED"] and not str(
        config["RATELIMIT_STORAGE_URI"]
    ).startswith("memory://")
    uses_keys = config["CHATKIT_PROVIDER"] == "local"
    return {
        "database": _database,
        "ratelimit_storage": _ratelimit_storage if uses_storage else None,
        "signing_keys": _signing_keys if uses_keys else None,
    }


def _run(name: str, check: Callable[[], bool] | None) -> str:
    if check is None:
        return "skipped"
    try:
        return "ok" if check() else "failed"
    except Exception as error:  # any failure of a dependency is "not ready", never a 500
        emit("health.check_failed", logging.ERROR, check=name, error=type(error).__name__)
        return "failed"


def _database() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        raise
    return True


def _ratelimit_storage() -> bool:
    return bool(limiter.storage.check())


def _signing_keys() -> bool:
    from .codex.keys import key_store

    store = key_store()
    # Readiness is about the database now, not this process's cached copy. Read afresh, the
    # copy stays whole meanwhile: a load balancer's probe must not empty it every few seconds.
    store.refresh()
    return bool(store.current().kid)
