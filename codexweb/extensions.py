"""Extension objects, created bare here and bound to the app in `create_app`."""

from __future__ import annotations

from flask_login import LoginManager
from flask_mailman import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from .ratelimit import CodexLimiter, rate_limit_key


class Base(DeclarativeBase):
    pass


# expire_on_commit=False: a request ends right after its commit, and expiring every loaded
# object made the response and the event logged after the commit reload each one (a SELECT
# per object on the token path and `/current`). Objects are never shared between requests
# (the session is scoped to the app context), and the code that writes with core UPDATEs
# keeps the loaded objects in step (`set_committed_value`) or refreshes them explicitly
# (`sessions.purge_expired`).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
login_manager = LoginManager()
mail = Mail()
csrf = CSRFProtect()
limiter = CodexLimiter(key_func=rate_limit_key)
