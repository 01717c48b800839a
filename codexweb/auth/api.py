"""Accounts JSON API under /api/auth (CONTRACT.md §3)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .guards import current_request_user, require_user
from .schemas import user_json

bp = Blueprint("auth_api", __name__, url_prefix="/api/auth")


@bp.get("/me")
@require_user
def me():
    return jsonify(user=user_json(current_request_user()))
