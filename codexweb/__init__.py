"""codexweb: the ChatKit/Codex session lifecycle as a Flask application."""

from __future__ import annotations

from typing import Any

import click
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import concurrency, database, errors, logging, metrics, ratelimit_storage
from .config import instance_path_from_env, load_config
from .extensions import csrf, db, login_manager, mail, migrate


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the application. `test_config` replaces instance config and environment."""
    app = Flask(
        __name__,
        template_folder="../templates",
        static_folder="../static",
        instance_relative_config=True,
        instance_path=instance_path_from_env(),
    )
    load_config(app, test_config)
    validate_chatkit_config(app)
    logging.init_app(app)
    # First: its timer starts before any other hook runs, its count sees the final status.
    metrics.init_app(app)
    register_request_start(app)
    register_extensions(app)
    register_blueprints(app)
    register_request_hooks(app)
    errors.init_app(app)
    register_cli(app)
    register_proxy_fix(app)
    concurrency.init_app(app)
    check_signing_keys(app)
    return app


def check_signing_keys(app: Flask) -> None:
    """Refuse to serve when the stored signing keys cannot be decrypted (SECRET_KEY changed).

    Not for `flask …` commands: the operator must still be able to upgrade the schema or fix
    the keys, and the key commands fail with the same message when they touch them.
    """
    from .codex.keys import check_keys_open

    if click.get_current_context(silent=True) is None:
        check_keys_open(app)


def validate_chatkit_config(app: Flask) -> None:
    """Refuse to start with a ChatKit provider configuration that cannot work."""
    from .codex.openai_provider import validate_chatkit_config

    validate_chatkit_config(app.config)


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    # No `current_user` template global: it loads the user on every render, which would break
    # the error page itself when the database is down. The layout asks codex.views instead.
    login_manager.init_app(app, add_context_processor=False)
    mail.init_app(app)
    csrf.init_app(app)
    ratelimit_storage.init_app(app)

    from .auth.logins import load_session_user

    login_manager.user_loader(load_session_user)

    from .auth import password_login, sso_client

    sso_client.init_app(app)
    password_login.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .auth.api import bp as auth_api
    from .auth.views import bp as auth_views
    from .codex.api import bp as codex_api
    from .codex.api import wellknown
    from .codex.views import bp as codex_views
    from .health import bp as health
    from .openapi import bp as openapi
    from .runtime.views import bp as runtime

    app.register_blueprint(health)
    app.register_blueprint(auth_api)
    app.register_blueprint(auth_views)
    app.register_blueprint(codex_api)
    app.register_blueprint(wellknown)
    app.register_blueprint(codex_views)
    app.register_blueprint(openapi)

    from .auth.sso_views import bp as sso

    app.register_blueprint(sso)
    app.register_blueprint(runtime)

    from .auth.account_views import bp as account_views

    app.register_blueprint(account_views)


def register_request_start(app: Flask) -> None:
    """Forget the previous request's caller before any hook asks who is calling.

    The rate limiter's hook (an extension's, registered next) keys on the Bearer claim, which
    the guard then reuses: both must see this request's, decoded once.
    """
    from .auth.guards import forget_previous_user

    app.before_request(forget_previous_user)


def register_request_hooks(app: Flask) -> None:
    from . import bodies, security
    from .auth.guards import enforce_csrf

    app.before_request(enforce_csrf)
    security.init_app(app)
    bodies.init_app(app)


def register_cli(app: Flask) -> None:
    from .cli import register_commands

    register_commands(app)


def register_proxy_fix(app: Flask) -> None:
    """Trust X-Forwarded-* only from the configured number of proxies in front of us."""
    count = int(app.config["PROXY_FIX_COUNT"])
    if count > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_prefix=count
        )
