"""JSON shapes of the accounts API: request bodies (pydantic v2, parsed by
`codexweb.bodies.parse_body`) and the USER object."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ..clock import isoformat
from ..models import User
from .account import LoginView
from .accounts import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, email_problem, normalise_email


def _valid_email(value: str) -> str:
    email = normalise_email(value)
    problem = email_problem(email)
    if problem:
        raise ValueError(problem)
    return email


Email = Annotated[str, AfterValidator(_valid_email)]
NewPassword = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]
# Login accepts any non-empty password up to the maximum: a short one simply does not match.
GivenPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]


class _Body(BaseModel):
    # strict: "password": 123 is a wrong type, not the string "123".
    model_config = ConfigDict(strict=True, extra="ignore")


class RegisterBody(_Body):
    email: Email
    password: NewPassword


class LoginBody(_Body):
    email: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    password: GivenPassword


class EmailBody(_Body):
    email: Email


class TokenBody(_Body):
    token: Token


class ResetPasswordBody(_Body):
    token: Token
    password: NewPassword


class ChangePasswordBody(_Body):
    current_password: GivenPassword
    new_password: NewPassword


class ChangeEmailBody(_Body):
    password: GivenPassword
    new_email: Email


class PasswordBody(_Body):
    password: GivenPassword


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "created_at": isoformat(user.created_at),
    }


def login_json(login: LoginView) -> dict[str, Any]:
    return {
        "id": login.id,
        "kind": login.kind,
        "created_at": isoformat(login.created_at),
        "last_used_at": isoformat(login.last_used_at),
        "user_agent": login.user_agent,
        "current": login.current,
    }
