"""`GET /healthz`: 200 when the database answers, 503 otherwise (CONTRACT.md §1)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
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
