"""The rate limits of Codex sessions, shared by the JSON API and the pages.

Starting a session from `/codex/chatkit` and `POST /api/codex/sessions` draw on one budget
(one flask-limiter scope), so a client cannot double it by alternating doors; the same goes
for ChatKit tokens. Values come from config at request time.
"""

from __future__ import annotations

from ..extensions import limiter
from ..ratelimit import configured

session_create_limit = limiter.shared_limit(
    configured("RATELIMIT_SESSION_CREATE"), scope="codex-session-create", methods=["POST"]
)
token_limit = limiter.shared_limit(
    configured("RATELIMIT_TOKEN"), scope="codex-chatkit-token", methods=["GET"]
)
