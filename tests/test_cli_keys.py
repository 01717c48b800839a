"""`flask --app codexweb keys rotate|list`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2026, 10, 2, tzinfo=UTC)


def published_kids(client) -> list[str]:
    return [key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]]


def test_rotate_adds_a_current_key_and_keeps_the_old_one_published(client, runner, frozen_clock):
    frozen_clock(START)
    (first,) = published_kids(client)
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("new signing key ")
    second = result.output.split()[-1]
    assert second != first
    assert sorted(published_kids(client)) == sorted([first, second])

    listing = runner.invoke(args=["keys", "list"]).output.splitlines()
    assert [line.split()[:2] for line in listing] == [[first, "published"], [second, "current"]]

    frozen_clock(START + timedelta(seconds=600))  # the old key's last tokens have expired
    assert published_kids(client) == [second]
    third = runner.invoke(args=["keys", "rotate"]).output.split()[-1]
    assert sorted(published_kids(client)) == sorted([second, third])
    listing = runner.invoke(args=["keys", "list"]).output.splitlines()
    assert first not in "\n".join(listing)  # pruned by the rotation
