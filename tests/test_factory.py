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
