"""JSON shapes of the accounts API: request bodies (pydantic v2) and the USER object.

`parse_body(Model)` is the one place a JSON body becomes data: anything that is not a JSON
object of the right shape (malformed JSON, an array, wrong types, missing fields) is a 422
`invalid_request` with `errors: [{"field", "message"}]`, before any view touches the database.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from flask import request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from ..clock import isoformat
from ..errors import invalid_request
from ..models import User
from .accounts import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, normalise_email

EMAIL_MAX_LENGTH = 254
# Deliberately loose: one @, no spaces, a dot in the domain. The verification email is the
# real test of an address; this only catches typos and junk.
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Model = TypeVar("Model", bound=BaseModel)


def email_problem(email: str) -> str | None:
    """Why `email` (already normalised) is not an address, or None when it looks like one."""
    if not email:
        return "Enter your email address."
    if len(email) > EMAIL_MAX_LENGTH or not _EMAIL_SHAPE.match(email):
        return "Enter a valid email address."
    return None


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


def parse_body(model: type[Model], *, default: dict[str, Any] | None = None) -> Model:
    """The request's JSON object validated by `model`, or a 422 problem.

    `default` is used when the request has no body at all (for endpoints whose body is optional).
    """
    if default is not None and not request.get_data(cache=True):
        data: Any = default
    else:
        data = _json_object()
    try:
        return model.model_validate(data)
    except PydanticValidationError as error:
        raise invalid_request(field_errors(error)) from None


def _json_object() -> dict[str, Any]:
    if not request.is_json:
        raise invalid_request(
            [{"field": "body", "message": "Send a JSON object (Content-Type: application/json)."}]
        )
    # Werkzeug raises 413 here for a body above MAX_CONTENT_LENGTH; silent only covers bad JSON.
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise invalid_request([{"field": "body", "message": "The body must be a JSON object."}])
    return data


_MESSAGES = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
}


def field_errors(error: PydanticValidationError) -> list[dict[str, str]]:
    errors = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = _MESSAGES.get(item["type"]) or _message(item)
        errors.append({"field": field, "message": message})
    return errors


def _message(item: dict[str, Any]) -> str:
    context = item.get("ctx") or {}
    if item["type"] == "string_too_short" and context.get("min_length", 0) > 1:
        return f"Must be at least {context['min_length']} characters."
    if item["type"] == "string_too_short":
        return "This field is required."
    if item["type"] == "string_too_long":
        return f"Must be at most {context['max_length']} characters."
    if item["type"] == "value_error":
        return str(context.get("error", item["msg"]))
    return str(item["msg"])


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "created_at": isoformat(user.created_at),
    }
