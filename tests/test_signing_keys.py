"""The signing-key store's promises to operators (CONTRACT.md §1): keys in the database,
sealed; the files of earlier versions imported so tokens in flight keep verifying; a changed
SECRET_KEY refused at start with a message that says what to do; KEY_ENCRYPTION_KEY lets
SECRET_KEY change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from codexweb import create_app
from codexweb.codex import keys
from codexweb.codex.keys import KeysUndecryptable
from tests.codex_support import verify_with_jwks
from tests.conftest import base_test_config
from tests.servers import serve_gunicorn
from tests.test_codex_race import call


def write_old_key_file(directory, sequence: int, created_at: datetime) -> tuple[str, OKPKey]:
    """A key file exactly as versions before the database store wrote them."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = OKPKey.generate_key("Ed25519", private=True)
    kid = key.thumbprint()
    jwk = {**key.as_dict(private=True), "kid": kid, "alg": "EdDSA", "use": "sig"}
    record = {"created_at": created_at.isoformat(), "sequence": sequence, "jwk": jwk}
    (directory / f"{sequence:08d}-{kid}.json").write_text(json.dumps(record))
    return kid, key


def sign(key: OKPKey, kid: str) -> str:
    return jwt.encode({"alg": "EdDSA", "kid": kid}, {"sub": "usr_1"}, key, algorithms=["EdDSA"])


def kids(client) -> list[str]:
    return [key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]]


def test_key_files_of_an_earlier_version_are_imported_on_first_use(app, client, runner):
    directory = Path(app.config["CHATKIT_KEYS_DIR"])
    now = datetime.now(UTC)
    old_kid, old_key = write_old_key_file(directory, 1, now - timedelta(minutes=2))
    cur_kid, cur_key = write_old_key_file(directory, 2, now - timedelta(minutes=1))

    jwks = client.get("/.well-known/jwks.json").get_json()
    # A token the old version signed a moment ago still verifies; the newest file signs on.
    verify_with_jwks(sign(cur_key, cur_kid), jwks)
    verify_with_jwks(sign(old_key, old_kid), jwks)
    listing = runner.invoke(args=["keys", "list"]).output.splitlines()
    assert [line.split()[:2] for line in listing] == [[old_kid, "published"], [cur_kid, "current"]]
    # Importing again adds nothing.
    assert runner.invoke(args=["keys", "import"]).output.strip() == "imported 0 signing key(s)"


def test_another_hosts_key_folder_comes_in_retired(app, client, runner, tmp_path):
    own = kids(client)
    other_kid, other_key = write_old_key_file(tmp_path / "other-host", 1, datetime.now(UTC))
    result = runner.invoke(args=["keys", "import", str(tmp_path / "other-host")])
    assert result.output.strip() == f"imported 1 signing key(s): {other_kid}"
    app.extensions["codexweb.signing_keys"].keys = None  # as after the cache's 30 s
    assert sorted(kids(client)) == sorted([*own, other_kid])
    listing = dict(
        line.split()[:2] for line in runner.invoke(args=["keys", "list"]).output.splitlines()
    )
    assert listing == {own[0]: "current", other_kid: "published"}


def same_database(app, tmp_path, **overrides: str) -> dict:
    """The config of another process of this deployment: same database, other settings."""
    return {**base_test_config(tmp_path, app.config["DATABASE_URL"]), **overrides}


def test_a_changed_secret_key_refuses_to_start_with_a_clear_message(app, client, tmp_path):
    kids(client)  # the first key, sealed under the test SECRET_KEY
    config = same_database(app, tmp_path, SECRET_KEY="a-different-secret")
    with pytest.raises(KeysUndecryptable, match="SECRET_KEY changed without KEY_ENCRYPTION_KEY"):
        create_app(config)


def test_key_encryption_key_lets_the_secret_key_change(app, client, tmp_path):
    before = kids(client)
    with_kek = create_app(same_database(app, tmp_path, KEY_ENCRYPTION_KEY="kek-1"))
    with with_kek.app_context():  # the CLI runs in the app context it finds pushed
        result = with_kek.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.output.strip() == "resealed 1 signing key(s)"

    rotated_secret = create_app(
        same_database(app, tmp_path, SECRET_KEY="new-secret", KEY_ENCRYPTION_KEY="kek-1")
    )
    assert kids(rotated_secret.test_client()) == before


@pytest.mark.slow
def test_gunicorn_refuses_to_start_when_the_secret_key_changed(tmp_path):
    shared = {"CODEXWEB_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    with serve_gunicorn(tmp_path / "before", workers=1, env=shared) as server:
        status, jwks = call(server.url + "/.well-known/jwks.json")
        assert status == 200 and len(jwks["keys"]) == 1
    changed = {**shared, "CODEXWEB_SECRET_KEY": "someone-rotated-the-secret"}
    with (
        pytest.raises(RuntimeError, match="SECRET_KEY changed without KEY_ENCRYPTION_KEY"),
        serve_gunicorn(tmp_path / "after", workers=1, env=changed),
    ):
        pass


def test_a_readiness_probe_reads_the_keys_afresh_without_emptying_the_cache(
    app, client, monkeypatch
):
    """/readyz checks the database's keys. While it reads them, the other threads of the
    worker keep the cached copy: a probe every few seconds must not send each of them to
    the database to read and unseal the keys again."""
    client.get("/.well-known/jwks.json")  # the first key, created and cached
    cache = app.extensions["codexweb.signing_keys"]
    load, cached_while_reading = keys.KeyStore._load, []

    def observed_load(store, connection):
        cached_while_reading.append(cache.keys is not None)
        return load(store, connection)

    monkeypatch.setattr(keys.KeyStore, "_load", observed_load)
    assert client.get("/readyz").get_json()["checks"]["signing_keys"] == "ok"
    assert cached_while_reading == [True]


def test_made_up_key_ids_do_not_send_every_request_to_the_database(app, monkeypatch):
    """A token naming an unknown kid makes the check read the keys afresh (another host may
    have just rotated), but at most once per UNKNOWN_KID_REREAD_SECONDS; a known kid never."""
    from codexweb.runtime.access import AccessRefused, caller_from_token

    stranger = OKPKey.generate_key("Ed25519", private=True)
    with app.test_request_context():
        store = keys.key_store()
        store.verifying_keys()  # cached now
        load, loads = keys.KeyStore._load, []

        def counted_load(self, connection):
            loads.append(1)
            return load(self, connection)

        def refused(kid: str) -> None:
            with pytest.raises(AccessRefused):
                caller_from_token(sign(stranger, kid))

        monkeypatch.setattr(keys.KeyStore, "_load", counted_load)
        refused(store.current().kid)  # a known kid, a bad signature
        assert loads == []
        clock = [1000.0]
        monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
        store.refresh()  # the cache is fresh by the fake clock from here on
        loads.clear()
        for _ in range(5):
            refused("made-up")
        assert loads == [1]  # the first unknown kid reads at once
        clock[0] += keys.UNKNOWN_KID_REREAD_SECONDS / 2
        refused("made-up")
        assert loads == [1]
        clock[0] += keys.UNKNOWN_KID_REREAD_SECONDS / 2
        refused("made-up")
        assert loads == [1, 1]
