"""Flask-Mailman backends of our own: one `.eml` file per message, and console plus file.

Flask-Mailman's `file` backend appends every message of a connection to one `.log` file; the
contract wants one RFC 5322 message per file, which any mail client opens and tests parse
with `email.message_from_bytes`.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from flask_mailman.backends.base import BaseEmailBackend
from flask_mailman.backends.console import EmailBackend as ConsoleEmailBackend


class EmlFileEmailBackend(BaseEmailBackend):
    def __init__(self, *args, file_path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from flask import current_app

        self.directory = Path(file_path or current_app.config["MAIL_FILE_DIR"])

    def send_messages(self, email_messages) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            self._write(message.message().as_bytes())
            sent += 1
        return sent

    def _write(self, data: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        partial = target.with_suffix(".eml.part")
        # Write then rename, so a reader never sees half a message.
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, target)
        return target


class ConsoleFileEmailBackend(BaseEmailBackend):
    """The development default: print each message and keep a copy in the outbox."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.console = ConsoleEmailBackend(*args, **kwargs)
        self.file = EmlFileEmailBackend(*args, **kwargs)

    def send_messages(self, email_messages) -> int:
        messages = list(email_messages)
        self.file.send_messages(messages)
        return self.console.send_messages(messages)
