"""Account pages: /login, /register, /logout, /verify-email, password reset."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("auth_views", __name__)


@bp.get("/login")
def login():
    return render_template("auth/login.html")
