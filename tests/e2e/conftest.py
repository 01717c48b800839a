"""Browser tests: Debian's Chromium driven by pytest-playwright against codexweb served by
gunicorn on loopback (tests.servers.serve_gunicorn).

- Chromium is `/usr/bin/chromium` (`playwright install` cannot download browsers here);
  without it these tests skip, or fail when CODEXWEB_REQUIRE_BROWSER=1 (CI).
- Every page is watched: a console error or an uncaught page error fails the test, except
  the ones a test declares it provokes (`watch.expect(...)`, e.g. the 429 it triggers).
- `steps` screenshots every step; when the test fails they are kept, one PNG per step, in
  pytest-playwright's output folder (`test-results/<test id>/`).
- `assert_no_axe_violations(page)` runs axe-core (npm, tests/node) against the page's current
  state with the WCAG 2.1 A/AA rules; the page must allow the injected script (`bypass_csp`).
"""

from __future__ import annotations

import email
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from email import policy
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page
from playwright.sync_api import Error as PlaywrightError

from ..conftest import require
from ..servers import REPO, Server, serve_gunicorn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        require("CODEXWEB_REQUIRE_BROWSER", f"Chromium is not installed at {CHROMIUM}")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    # A fixed zone and locale so times and screenshots read the same on every machine.
    return {
        **browser_context_args,
        "viewport": {"width": 1280, "height": 800},
        "locale": "en-GB",
        "timezone_id": "UTC",
    }


# Servers ------------------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[..., Server]]:
    """`serve(**config)` starts codexweb under gunicorn with CODEXWEB_<KEY>=value settings."""
    with _ServerPool(tmp_path) as pool:
        yield pool.start


class _ServerPool:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.contexts: list[Any] = []

    def start(self, workers: int = 1, port: int | None = None, **config: Any) -> Server:
        env = {f"CODEXWEB_{key}": str(value) for key, value in config.items()}
        # Text logs read better in a failure report; limits stay per process (one worker).
        env.setdefault("CODEXWEB_LOG_FORMAT", "text")
        context = serve_gunicorn(
            self.tmp_path / f"server-{len(self.contexts)}", workers=workers, env=env, port=port
        )
        server = context.__enter__()
        self.contexts.append(context)
        return server

    def __enter__(self) -> _ServerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        for context in reversed(self.contexts):
            context.__exit__(None, None, None)


def mails_to(server: Server, address: str) -> list[email.message.EmailMessage]:
    """The messages the server wrote to its outbox (MAIL_BACKEND=file), oldest first."""
    outbox = server.instance_path / "outbox"
    messages = []
    for path in sorted(outbox.glob("*.eml"), key=lambda path: path.stat().st_mtime_ns):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if address in str(message["To"]):
            messages.append(message)
    return messages


def wait_for_mail(page: Page, server: Server, address: str, count: int) -> None:
    """Wait until the server's outbox holds `count` messages to `address`."""
    for _ in range(50):  # the mail queue delivers in the background
        if len(mails_to(server, address)) >= count:
            return
        page.wait_for_timeout(100)
    assert len(mails_to(server, address)) >= count


def link_path(message: email.message.EmailMessage, prefix: str) -> str:
    """The path of the first link in the message starting with `prefix` (e.g. /verify-email/)."""
    body = message.get_body(preferencelist=("plain", "html")).get_content()
    match = re.search(rf"https?://[^/\s]+({re.escape(prefix)}[^\s\"<>]+)", body)
    assert match, f"no {prefix} link in:\n{body}"
    return match.group(1)


# Watching the browser -----------------------------------------------------------------------


class ConsoleWatch:
    """Collects console errors and page errors of every page in a context."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def attach(self, context: BrowserContext) -> None:
        context.on("page", self._watch_page)
        for page in context.pages:
            self._watch_page(page)

    def _watch_page(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def expect(self, pattern: str) -> None:
        """Declare an error this test provokes on purpose (a regular expression)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [
            error
            for error in self.errors
            if not any(pattern.search(error) for pattern in self.expected)
        ]


@pytest.fixture
def watch(context: BrowserContext) -> Iterator[ConsoleWatch]:
    watcher = ConsoleWatch()
    watcher.attach(context)
    yield watcher
    unexpected = watcher.unexpected()
    assert not unexpected, "JavaScript errors in the browser:\n" + "\n".join(unexpected)


class Steps:
    """`with steps("sign up"):` … a screenshot after each step, kept when the test fails."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0
        self.current = ""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.count += 1
        self.current = f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
        try:
            yield
        finally:
            self.shoot(self.current)

    def shoot(self, name: str) -> None:
        # A closed or crashed page must not hide the real failure.
        with suppress(PlaywrightError):
            self.page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


@pytest.fixture
def steps(page: Page, tmp_path: Path, output_path: str, request) -> Iterator[Steps]:
    folder = tmp_path / "steps"
    folder.mkdir()
    recorder = Steps(page, folder)
    yield recorder
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        recorder.shoot(f"{recorder.count + 1:02d}-at-failure")
        shutil.copytree(folder, Path(output_path) / "steps", dirs_exist_ok=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


# Accessibility --------------------------------------------------------------------------------

NODE_TOOLS = REPO / "tests" / "node"
AXE_SCRIPT = NODE_TOOLS / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core from tests/node (package-lock.json pins it); installed with npm when missing."""
    if not AXE_SCRIPT.exists() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--prefix", str(NODE_TOOLS), "--no-audit", "--no-fund", "--quiet"],
            check=False,
            capture_output=True,
        )
    if not AXE_SCRIPT.exists():
        require("CODEXWEB_REQUIRE_BROWSER", f"axe-core is not installed in {NODE_TOOLS}")
    return AXE_SCRIPT


@pytest.fixture
def assert_no_axe_violations(axe_script: Path) -> Callable[..., None]:
    """`assert_no_axe_violations(page, "what is shown")`: no WCAG 2.1 AA violation right now."""

    def check(page: Page, state: str = "") -> None:
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.add_script_tag(path=str(axe_script))
        assert page.evaluate("() => typeof window.axe === 'object'"), (
            "axe-core did not load: the page's CSP blocks it (use bypass_csp in the context)"
        )
        violations = page.evaluate(
            """async (tags) => {
                const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
                return result.violations.map((violation) => ({
                    id: violation.id,
                    impact: violation.impact,
                    help: violation.help,
                    nodes: violation.nodes.map(
                        (node) => node.target.join(" ") + ": " + node.failureSummary
                    ),
                }));
            }""",
            WCAG_21_AA,
        )
        report = "\n".join(
            f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"])
            for v in violations
        )
        assert not violations, f"axe-core violations on {state or page.url}:\n{report}"

    return check
