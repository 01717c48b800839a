"""`/api/openapi.json` and `/api/docs` (CONTRACT.md §8): a valid OpenAPI 3.1 document of every
JSON endpoint that exists, with request, response and problem schemas, generated from the
routes and the pydantic models; docs rendered from vendored assets, no CDN."""

from __future__ import annotations

import re
from types import SimpleNamespace

from openapi_spec_validator import validate

from codexweb import openapi

CONTRACT_ROUTES_TODAY = {
    ("post", "/api/auth/register"),
    ("post", "/api/auth/login"),
    ("get", "/api/auth/me"),
    ("post", "/api/codex/sessions"),
    ("get", "/api/codex/sessions"),
    ("get", "/api/codex/sessions/current"),
    ("get", "/api/codex/sessions/{session_id}"),
    ("delete", "/api/codex/sessions/{session_id}"),
    ("post", "/api/codex/sessions/{session_id}/close"),
    ("get", "/api/codex/chatkit/token"),
    ("get", "/api/codex/chatkit/sessions"),
    ("post", "/api/codex/events"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/readyz"),
    ("post", "/chatkit"),
}


def documented(document) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert documented(document) >= CONTRACT_ROUTES_TODAY


def test_every_documented_operation_is_a_route_and_every_json_route_is_documented(app, client):
    document = client.get("/api/openapi.json").get_json()
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/auth", "/api/codex", "/.well-known", "/chatkit")):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routed |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    api = {(m, p) for m, p in documented(document) if p not in ("/healthz", "/readyz")}
    assert api == routed


def test_shapes_come_from_the_models_the_views_validate_with(client):
    document = client.get("/api/openapi.json").get_json()
    create = document["paths"]["/api/codex/sessions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/CreateSessionBody"}
    schema = document["components"]["schemas"]["CreateSessionBody"]
    assert schema["required"] == ["placement", "agent_id"]
    assert schema["additionalProperties"] is False
    conflict = create["responses"]["409"]["content"]["application/problem+json"]["schema"]
    assert conflict == {"$ref": "#/components/schemas/SessionExists"}
    invalid = create["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert invalid == {"$ref": "#/components/schemas/InvalidRequest"}
    token = document["paths"]["/api/codex/chatkit/token"]["get"]
    assert token["security"] == [{"bearer": []}, {"browser": []}]
    assert {"401", "403", "404", "422", "429", "503"} <= set(token["responses"])


def test_chatkit_is_documented_with_its_own_token_and_both_answers(client):
    """CONTRACT §4b: `POST /chatkit` is a JSON endpoint too. It takes a ChatKit token, not
    the API's access token or cookie, and answers JSON or a stream of events."""
    document = client.get("/api/openapi.json").get_json()
    chatkit = document["paths"]["/chatkit"]["post"]
    assert chatkit["security"] == [{"chatkit": []}]
    scheme = document["components"]["securitySchemes"]["chatkit"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    answers = chatkit["responses"]["200"]["content"]
    assert set(answers) == {"application/json", "text/event-stream"}
    assert answers["text/event-stream"]["schema"]["required"] == ["data"]  # each event's
    body = chatkit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatKitRequest"}
    request = document["components"]["schemas"]["ChatKitRequest"]
    assert request["required"] == ["type", "params"]
    # The types the SDK has, less those this server refuses by name.
    assert {"threads.create", "threads.add_user_message", "items.feedback"} <= set(
        request["properties"]["type"]["enum"]
    )
    assert "attachments.create" not in request["properties"]["type"]["enum"]
    assert {"401", "404", "413", "422", "429", "503"} <= set(chatkit["responses"])
    assert "403" not in chatkit["responses"]  # no verified gate, no CSRF: the token is all

    # What the document promises for a refused caller is what the endpoint answers.
    refused = client.post("/chatkit", json={"type": "threads.list", "params": {}})
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"
    promised = chatkit["responses"]["401"]["content"]["application/problem+json"]["schema"]
    assert promised == {"$ref": "#/components/schemas/Problem"}
    required = document["components"]["schemas"]["Problem"]["required"]
    assert set(required) <= set(refused.get_json())


def test_the_account_endpoints_are_documented_with_their_bodies(app_factory):
    """CONTRACT §3's self-service endpoints: documented because their routes exist, each
    with the pydantic body the view parses."""
    document = openapi.build_document(app_factory())
    assert {
        ("post", "/api/auth/password/change"),
        ("post", "/api/auth/email/change"),
        ("post", "/api/auth/email/confirm"),
        ("get", "/api/auth/logins"),
        ("delete", "/api/auth/logins/{login_id}"),
        ("post", "/api/auth/logins/revoke-others"),
        ("delete", "/api/auth/account"),
    } <= documented(document)
    paths = document["paths"]
    body = paths["/api/auth/password/change"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/ChangePasswordBody"}


def test_a_route_that_does_not_exist_is_not_documented(app_factory):
    """The contract describes an endpoint; only a route in the url_map makes it documented."""
    app = app_factory()
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule != "/api/auth/logins"]
    without_logins = SimpleNamespace(url_map=SimpleNamespace(iter_rules=lambda: iter(rules)))
    assert ("get", "/api/auth/logins") in documented(openapi.build_document(app))
    assert ("get", "/api/auth/logins") not in documented(openapi.build_document(without_logins))


def test_docs_page_uses_only_vendored_assets(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js" in assets
    assert all(asset.startswith("/") for asset in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "script-src 'self';" in response.headers["Content-Security-Policy"]
    assert client.get("/static/vendor/swagger-ui-5.35.0/LICENSE").status_code == 200
