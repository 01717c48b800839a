from pathlib import Path

import pytest

from codexweb import create_app


def test_test_config_is_applied(app):
    assert app.testing
    assert app.config["MAIL_BACKEND_NAME"] == "locmem"


def test_secret_key_is_generated_once_into_the_instance_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXWEB_INSTANCE_PATH", str(tmp_path / "inst"))
    monkeypatch.delenv("CODEXWEB_SECRET_KEY", raising=False)
    first = create_app()
    second = create_app()
    secret_file = Path(first.instance_path) / "secret_key"
    assert secret_file.read_text() == first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 48
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_production_refuses_to_start_without_an_explicit_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXWEB_INSTANCE_PATH", str(tmp_path / "inst"))
    monkeypatch.setenv("CODEXWEB_ENV", "production")
    monkeypatch.delenv("CODEXWEB_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY must be set"):
        create_app()


def test_production_refuses_to_start_without_a_public_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXWEB_INSTANCE_PATH", str(tmp_path / "inst"))
    monkeypatch.setenv("CODEXWEB_ENV", "production")
    monkeypatch.setenv("CODEXWEB_SECRET_KEY", "s" * 48)
    monkeypatch.delenv("CODEXWEB_PUBLIC_BASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL must be set"):
        create_app()
    monkeypatch.setenv("CODEXWEB_PUBLIC_BASE_URL", "https://codex.example.com")
    assert create_app().config["SESSION_COOKIE_SECURE"] is True


def test_environment_overrides_with_json_values(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXWEB_INSTANCE_PATH", str(tmp_path / "inst"))
    monkeypatch.setenv("CODEXWEB_CODEX_PLACEMENTS", '["ops"]')
    monkeypatch.setenv("CODEXWEB_ACCESS_TOKEN_TTL", "60")
    app = create_app()
    assert app.config["CODEX_PLACEMENTS"] == ["ops"]
    assert app.config["ACCESS_TOKEN_TTL"] == 60


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


def test_readyz_skips_the_rate_limit_storage_while_limits_are_off(app_factory):
    # Nothing listens on port 9: were the storage checked, readiness would fail for good.
    app = app_factory(RATELIMIT_ENABLED=False, RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["ratelimit_storage"] == "skipped"


def production_app(tmp_path, monkeypatch, **env):
    monkeypatch.setenv("CODEXWEB_INSTANCE_PATH", str(tmp_path / "inst"))
    monkeypatch.setenv("CODEXWEB_ENV", "production")
    monkeypatch.setenv("CODEXWEB_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("CODEXWEB_PUBLIC_BASE_URL", "https://codex.example.com")
    for key, value in env.items():
        monkeypatch.setenv(f"CODEXWEB_{key}", value)
    return create_app()


def test_mail_defaults_to_smtp_in_production_and_console_plus_file_in_development(
    tmp_path, monkeypatch
):
    # Printing and keeping live verification/reset links is for a developer's machine only.
    assert production_app(tmp_path, monkeypatch).config["MAIL_BACKEND_NAME"] == "smtp"
    monkeypatch.setenv("CODEXWEB_ENV", "development")
    assert create_app().config["MAIL_BACKEND_NAME"] == "console+file"
    monkeypatch.setenv("CODEXWEB_MAIL_BACKEND", "file")
    assert create_app().config["MAIL_BACKEND_NAME"] == "file"


def test_the_demo_agent_is_offered_in_every_configured_placement(app_factory, user, auth_headers):
    app = app_factory(CODEX_PLACEMENTS=["ops", "dashboard"])
    response = app.test_client().get("/api/codex/agents", headers=auth_headers(user))
    assert response.get_json()["agents"][0]["placements"] == ["ops", "dashboard"]


def test_database_errors_reach_the_log_without_the_values_involved(app, caplog):
    """Bound parameters are hidden from error texts, and a driver message that quotes a row
    value (PostgreSQL's unique violation does) is not logged either."""
    import secrets

    from sqlalchemy import text

    from codexweb.extensions import db

    value = {"v": f"hash-{secrets.token_hex(8)}"}  # made here, so no source line shows it
    with app.app_context():
        db.session.execute(text("CREATE TABLE leak_probe (v VARCHAR(40) UNIQUE)"))
        db.session.execute(text("INSERT INTO leak_probe VALUES (:v)"), value)
        db.session.commit()

    @app.get("/probe")
    def probe():
        db.session.execute(text("INSERT INTO leak_probe VALUES (:v)"), value)

    response = app.test_client().get("/probe", headers={"Accept": "application/json"})
    assert response.status_code == 500
    assert value["v"] not in response.get_data(as_text=True)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unhandled database error on /probe: " in logged
    assert value["v"] not in logged
