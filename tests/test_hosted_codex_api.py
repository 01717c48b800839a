"""The codex API's own tests, run again with CHATKIT_PROVIDER=openai: the token endpoint,
the ChatKit session list and the whole ownership/verified-gate matrix must answer exactly as
they do with the local provider (CONTRACT.md §4), with OpenAI's stand-in on loopback.

Only the provider-independent tests are reused; the local provider's own (JWT claims, one
record per Codex session) stay in tests/test_codex_api.py, and what both providers share
beyond them is in tests/test_hosted_contract.py.
"""

from tests.hosted_support import (  # noqa: F401 (fixtures: the hosted configuration)
    _close_upstream_clients,
    config_overrides_fixture,
    hosted_config_fixture,
    new_session,
    token_for,
    upstream_fixture,
)
from tests.test_codex_api import (  # noqa: F401 (the reused tests and their fixtures)
    owner,
    owners_session,
    stranger,
    test_anonymous_callers_get_401_with_www_authenticate,
    test_other_users_never_see_the_owners_session,
    test_the_owner_is_served,
    test_token_for_a_closed_session_is_404,
    test_token_for_unknown_session_is_404,
    test_token_without_session_id_is_422,
    test_unverified_callers_get_403,
)


def test_these_runs_use_the_hosted_provider(app, client, user, auth_headers, upstream):
    """Guards the reuse above: the imported tests really ran against the hosted provider."""
    assert app.config["CHATKIT_PROVIDER"] == "openai"
    headers = auth_headers(user)
    session = new_session(client, headers)
    response = token_for(client, headers, session["session_id"])
    assert response.get_json()["chatkit_session_id"] == upstream.created[0]["id"]
