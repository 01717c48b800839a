"""A login's device in words ("Chrome on Windows") from its stored User-Agent.

The /account page names each login so a person can tell their own devices apart. Werkzeug no
longer parses user agents, and a parsing library is more than this needs: the few browser and
system names people recognise, checked in an order that respects how user agents lie (every
Chromium browser says "Safari", Edge and Opera say "Chrome").
"""

from __future__ import annotations

import re

_BROWSERS = (
    ("Edge", re.compile(r"\bEdg(e|A|iOS)?/")),
    ("Opera", re.compile(r"\b(OPR|Opera)/")),
    ("Firefox", re.compile(r"\b(Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(HeadlessChrome|Chrome|Chromium|CriOS)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
    ("curl", re.compile(r"^curl/")),
    ("Python", re.compile(r"^(python-requests|python-httpx|Python-urllib|Werkzeug)/")),
)
_SYSTEMS = (
    ("iPhone", re.compile(r"\biPhone\b")),
    ("iPad", re.compile(r"\biPad\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b")),
)


def describe_device(user_agent: str | None) -> str:
    """ "Firefox on Linux", "Chrome", "Android device", or "Unknown device"."""
    if not user_agent:
        return "Unknown device"
    browser = _first(_BROWSERS, user_agent)
    system = _first(_SYSTEMS, user_agent)
    if browser and system:
        return f"{browser} on {system}"
    if browser:
        return browser
    if system:
        return f"{system} device"
    return "Unknown device"


def _first(patterns: tuple[tuple[str, re.Pattern[str]], ...], text: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(text)), None)
