"""docs/DEPLOY.md, followed: every config key documented, every `flask` command in it run
here against PostgreSQL and Redis, the backup and restore commands, and the nginx site and
systemd units checked by nginx and systemd themselves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from codexweb.config import defaults
from tests.servers import REPO, VENV_BIN, codexweb_env, serve_gunicorn
from tests.services import create_database, drop_database

GUIDE = Path(REPO) / "docs" / "DEPLOY.md"
ADMIN_PASSWORD = "a long passphrase for the admin"


def guide() -> str:
    return GUIDE.read_text()


def code_block(first_line_contains: str) -> str:
    """The fenced block of the guide whose first line names that file."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", guide(), flags=re.S):
        if first_line_contains in block.splitlines()[0]:
            return block
    raise AssertionError(f"no code block starting with {first_line_contains!r} in DEPLOY.md")


# The guide says what exists ------------------------------------------------------------


def test_every_config_key_is_documented():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", guide()))
    missing = sorted(set(defaults("/instance")) - documented)
    assert missing == [], f"document these keys in docs/DEPLOY.md: {missing}"


def test_the_env_file_sets_only_real_keys():
    keys = set(defaults("/instance")) | {"INSTANCE_PATH"}
    for line in code_block("codexweb.env").splitlines():
        if line.startswith("CODEXWEB_"):
            key = line.split("=", 1)[0].removeprefix("CODEXWEB_")
            assert key in keys, f"{key} in the guide's env file is not a codexweb setting"


# Every `flask --app codexweb …` command of the guide, and where it is exercised.
EXERCISED = {
    "db upgrade": "test_operator_walkthrough (and tests/test_migrations.py)",
    "db check": "test_operator_walkthrough (and tests/test_migrations.py)",
    "db downgrade": "tests/test_migrations.py",
    "users create": "test_operator_walkthrough",
    "users unlink-sso": "tests/test_sso.py (the way out of account_linked)",
    "keys rotate": "test_operator_walkthrough",
    "keys list": "test_operator_walkthrough",
    "keys import": "test_operator_walkthrough (and tests/test_signing_keys.py)",
    "keys reseal": "test_operator_walkthrough (and tests/test_signing_keys.py)",
    "sessions purge-expired": "test_operator_walkthrough",
    "mail worker": "tests/test_mail_queue.py (--once; the loop is the thread mode's)",
}


def test_every_flask_command_in_the_guide_is_exercised():
    commands = set(re.findall(r"flask --app codexweb ([a-z-]+ [a-z-]+)", guide()))
    assert commands, "the guide lost its commands"
    assert commands <= set(EXERCISED), sorted(commands - set(EXERCISED))


# Following it --------------------------------------------------------------------------


def guide_env(database_url: str, redis_uri: str, instance: Path) -> dict[str, str]:
    """The guide's env file, pointed at this test's database, Redis and instance folder."""
    env = {}
    for line in code_block("codexweb.env").splitlines():
        if line.startswith(("CODEXWEB_", "GUNICORN_")):
            name, value = line.split("=", 1)
            env[name] = value
    env.update(
        {
            "CODEXWEB_SECRET_KEY": "s" * 64,
            "CODEXWEB_INSTANCE_PATH": str(instance),
            "CODEXWEB_DATABASE_URL": database_url,
            "CODEXWEB_RATELIMIT_STORAGE_URI": redis_uri,
            "CODEXWEB_MAIL_BACKEND": "file",  # no SMTP server here
        }
    )
    env.pop("GUNICORN_BIND")  # serve_gunicorn picks a free port
    env.pop("GUNICORN_WORKERS")  # and the worker count
    return env


def flask(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", *args],
        cwd=REPO,
        env=codexweb_env(Path(env["CODEXWEB_INSTANCE_PATH"]), env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def libpq_url(database_url: str) -> str:
    """What pg_dump and pg_restore take: the URL without SQLAlchemy's `+psycopg`."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


@pytest.mark.slow
def test_operator_walkthrough(tmp_path, postgres_database, redis_namespace):
    env = guide_env(postgres_database, redis_namespace.storage_uri, tmp_path / "instance")
    env["CODEXWEB_RATELIMIT_KEY_PREFIX"] = redis_namespace.key_prefix

    # Section 6: schema and first user.
    flask(env, "db", "upgrade")
    assert "No new upgrade operations detected" in flask(env, "db", "check")
    assert "created" in flask(
        env, "users", "create", "admin@example.com", "--password", ADMIN_PASSWORD, "--verified"
    )

    # Section 7: the service, with the guide's settings (production, Redis, one proxy).
    with serve_gunicorn(tmp_path, workers=2, env=env) as server:
        login = urllib.request.Request(
            server.url + "/api/auth/login",
            data=json.dumps({"email": "admin@example.com", "password": ADMIN_PASSWORD}).encode(),
            headers={"Content-Type": "application/json", "X-Forwarded-Proto": "https"},
        )
        with urllib.request.urlopen(login) as response:
            assert json.load(response)["email_verified"] is True
            # Production behind TLS: the refresh cookie is Secure.
            assert "Secure" in response.headers["Set-Cookie"]

        # Section 11: key rotation while serving; the new key is published at once.
        rotated = flask(env, "keys", "rotate")
        kid = re.search(r"new signing key (\S+)", rotated).group(1)
        with urllib.request.urlopen(server.url + "/.well-known/jwks.json") as response:
            assert kid in {key["kid"] for key in json.load(response)["keys"]}
        assert f"{kid} current" in flask(env, "keys", "list")
        assert "imported 0 signing key(s)" in flask(env, "keys", "import")
        assert "resealed 1 signing key(s)" in flask(env, "keys", "reseal")

        # Section 13: readiness names every dependency, all up.
        with urllib.request.urlopen(server.url + "/readyz") as response:
            assert json.load(response)["checks"] == {
                "database": "ok",
                "ratelimit_storage": "ok",
                "signing_keys": "ok",
            }

        # Section 9: the purge command the timer runs.
        flask(env, "sessions", "purge-expired")
    assert redis_namespace.keys(), "the rate limits did not count in Redis"

    # Section 10: backup, restore into an empty database, upgrade, the account is there.
    dump = tmp_path / "codexweb.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", f"--file={dump}", libpq_url(postgres_database)],
        check=True,
        capture_output=True,
    )
    restored = create_database(postgres_database)
    try:
        subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={libpq_url(restored)}", str(dump)],
            check=True,
            capture_output=True,
        )
        flask({**env, "CODEXWEB_DATABASE_URL": restored}, "db", "upgrade")
        assert emails(restored) == ["admin@example.com"]
    finally:
        drop_database(restored)


def emails(database_url: str) -> list[str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT email FROM users")).scalars())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sqlite_online_backup_command(tmp_path):
    instance = tmp_path / "instance"
    env = {"CODEXWEB_INSTANCE_PATH": str(instance)}
    flask(env, "db", "upgrade")
    flask(env, "users", "create", "solo@example.com", "--password", ADMIN_PASSWORD)
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 shell is not installed")
    copy = tmp_path / "backup.db"
    subprocess.run(
        ["sqlite3", str(instance / "codexweb.db"), f".backup '{copy}'"],
        check=True,
        capture_output=True,
    )
    assert emails(f"sqlite:///{copy}") == ["solo@example.com"]


# nginx and systemd check the files ------------------------------------------------------


def test_nginx_accepts_the_site(tmp_path):
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=codex.example.com", "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    site = (
        code_block("/etc/nginx/sites-available/codexweb")
        .replace("/etc/letsencrypt/live/codex.example.com/fullchain.pem", str(certificate))
        .replace("/etc/letsencrypt/live/codex.example.com/privkey.pem", str(key))
        .replace("/var/log/nginx/codexweb.access.log", str(tmp_path / "access.log"))
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n{site}\n}}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.parametrize(
    "unit", ["codexweb.service", "codexweb-purge.service", "codexweb-purge.timer"]
)
def test_systemd_accepts_the_units(tmp_path, unit):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text_ = code_block(f"/etc/systemd/system/{unit}")
    # Point the executables at this checkout, so systemd can check they exist.
    text_ = text_.replace("/srv/codexweb/venv/bin/", f"{VENV_BIN}/")
    (tmp_path / unit).write_text(text_)
    if unit.endswith(".timer"):
        (tmp_path / "codexweb-purge.service").write_text(
            code_block("/etc/systemd/system/codexweb-purge.service").replace(
                "/srv/codexweb/venv/bin/", f"{VENV_BIN}/"
            )
        )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        # This machine has no codexweb user, /srv tree or running systemd: not the unit's fault.
        if line.strip()
        and not re.search(
            r"codexweb'|/srv/codexweb|/etc/codexweb|System has not been booted|"
            r"Failed to connect|Failed to prepare|No such file|Unknown user",
            line,
        )
    ]
    assert problems == [], result.stderr
