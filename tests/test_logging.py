"""The log: one JSON object per line on stderr, whoever logs (codexweb/logging.py)."""

from __future__ import annotations

import json
import logging

from codexweb.logging import emit


def stderr_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_a_librarys_warning_is_one_json_line_and_its_info_stays_quiet(app_factory, capsys):
    app_factory(LOG_FORMAT="json")  # the handlers write to the stderr of their app's creation
    capsys.readouterr()
    library = logging.getLogger("asyncio")
    library.info("routine detail")
    try:
        raise RuntimeError("the task failed")
    except RuntimeError:
        library.error("Task exception was never retrieved", exc_info=True)
    [line] = stderr_lines(capsys)
    assert line["level"] == "error"
    assert line["logger"] == "asyncio"
    assert line["message"] == "Task exception was never retrieved"
    assert "RuntimeError: the task failed" in line["exception"]


def test_codexwebs_own_events_are_written_once(app_factory, capsys):
    app = app_factory(LOG_FORMAT="json")
    capsys.readouterr()
    with app.test_request_context():
        emit("codex.session.created", level=logging.WARNING, session_id="s-1")
    [line] = stderr_lines(capsys)
    assert line["event"] == "codex.session.created"
    assert line["session_id"] == "s-1"
