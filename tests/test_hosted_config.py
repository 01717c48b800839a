"""The hosted provider's configuration is checked when the application starts: a setting that
cannot work stops the start with a message naming it, instead of failing the first user."""

from __future__ import annotations

import subprocess

import pytest

from codexweb import create_app
from tests.conftest import base_test_config
from tests.servers import REPO, VENV_BIN, codexweb_env

AGENTS = {
    "agent_123": {"name": "Demo", "placements": ["dashboard"], "workflow_id": "wf_1"},
    "agent_456": {"name": "Other", "placements": ["dashboard"]},
}


def start(tmp_path, **settings):
    return create_app({**base_test_config(tmp_path), **settings})


def test_the_default_local_provider_needs_nothing_hosted(tmp_path):
    app = start(tmp_path)
    assert app.config["CHATKIT_PROVIDER"] == "local"
    assert app.config["CHATKIT_API_BASE"] == "https://api.openai.com"
    assert app.config["CHATKIT_UPSTREAM_TIMEOUT"] == 10
    assert app.config["CHATKIT_RATE_LIMIT_PER_MINUTE"] == 10


def test_a_complete_hosted_configuration_starts(tmp_path):
    agents = {"agent_123": AGENTS["agent_123"]}
    app = start(tmp_path, CHATKIT_PROVIDER="openai", OPENAI_API_KEY="sk-x", CODEX_AGENTS=agents)
    assert app.config["CHATKIT_PROVIDER"] == "openai"


def test_openai_without_a_key_refuses_to_start(tmp_path):
    agents = {"agent_123": AGENTS["agent_123"]}
    with pytest.raises(RuntimeError) as refused:
        start(tmp_path, CHATKIT_PROVIDER="openai", CODEX_AGENTS=agents)
    assert str(refused.value) == (
        "CHATKIT_PROVIDER=openai needs OPENAI_API_KEY: set CODEXWEB_OPENAI_API_KEY in the "
        "environment or OPENAI_API_KEY in instance/config.py"
    )


def test_openai_with_an_agent_without_workflow_refuses_to_start(tmp_path):
    with pytest.raises(RuntimeError) as refused:
        start(tmp_path, CHATKIT_PROVIDER="openai", OPENAI_API_KEY="sk-x", CODEX_AGENTS=AGENTS)
    assert str(refused.value) == (
        "CHATKIT_PROVIDER=openai needs a workflow_id for every agent in CODEX_AGENTS; "
        "missing for: agent_456"
    )


def test_the_default_demo_agent_has_no_workflow(tmp_path):
    with pytest.raises(RuntimeError, match="missing for: agent_123"):
        start(tmp_path, CHATKIT_PROVIDER="openai", OPENAI_API_KEY="sk-x")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"CHATKIT_PROVIDER": "azure"}, "CHATKIT_PROVIDER must be one of local, openai"),
        ({"CHATKIT_UPSTREAM_TIMEOUT": 0}, "CHATKIT_UPSTREAM_TIMEOUT must be a positive"),
        ({"CHATKIT_UPSTREAM_TIMEOUT": "10"}, "CHATKIT_UPSTREAM_TIMEOUT must be a positive"),
        ({"CHATKIT_RATE_LIMIT_PER_MINUTE": 0}, "CHATKIT_RATE_LIMIT_PER_MINUTE must be"),
        ({"CHATKIT_RATE_LIMIT_PER_MINUTE": 2.5}, "CHATKIT_RATE_LIMIT_PER_MINUTE must be"),
    ],
)
def test_other_impossible_settings_refuse_to_start(tmp_path, settings, message):
    hosted = {
        "CHATKIT_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-x",
        "CODEX_AGENTS": {"agent_123": AGENTS["agent_123"]},
    }
    with pytest.raises(RuntimeError, match=message):
        start(tmp_path, **{**hosted, **settings})


def test_an_operator_sees_the_missing_key_from_the_command_line(tmp_path):
    """Set through the environment, as in production: the CLI stops with the message."""
    env = codexweb_env(
        tmp_path / "instance",
        {
            "CODEXWEB_CHATKIT_PROVIDER": "openai",
            "CODEXWEB_CODEX_AGENTS": '{"a": {"name": "A", "placements": ["dashboard"], '
            '"workflow_id": "wf_1"}}',
        },
    )
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "db", "upgrade"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CHATKIT_PROVIDER=openai needs OPENAI_API_KEY" in result.stderr
