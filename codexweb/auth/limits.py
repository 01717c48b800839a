"""The rate limits of the accounts flow, shared by the JSON API and the pages.

Each limit is one flask-limiter scope used by both doors, so a client cannot double its login
budget by alternating between `/api/auth/login` and `/login`. Values are read from config at
request time (`RATELIMIT_*`), counted per user when logged in and per address otherwise.
"""

from __future__ import annotations

from ..extensions import limiter
from ..ratelimit import configured

login_limit = limiter.shared_limit(
    configured("RATELIMIT_LOGIN"), scope="auth-login", methods=["POST"]
)
register_limit = limiter.shared_limit(
    configured("RATELIMIT_REGISTER"), scope="auth-register", methods=["POST"]
)
resend_limit = limiter.shared_limit(
    configured("RATELIMIT_RESEND"), scope="auth-resend", methods=["POST"]
)
password_reset_limit = limiter.shared_limit(
    configured("RATELIMIT_PASSWORD_RESET"), scope="auth-password-reset", methods=["POST"]
)
