"""The one place a JSON request body becomes data, for every API blueprint.

Anything that is not a JSON object of the right shape (not JSON at all, NaN or Infinity, a
nesting too deep to parse, an array, wrong types, missing or unknown fields) is a 422
`invalid_request` with `errors: [{"field", "message"}]`, before any view touches the database.
A body above MAX_CONTENT_LENGTH never gets here: Werkzeug answers 413 first.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from .errors import invalid_request

Model = TypeVar("Model", bound=BaseModel)

_MESSAGES = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "extra_forbidden": "Unknown field.",
    "dict_type": "Must be a JSON object.",
}


def parse_body(model: type[Model], *, default: dict[str, Any] | None = None) -> Model:
    """The request's JSON object validated by `model`, or a 422 problem.

    `default` stands in for a request with no body at all (endpoints whose body is optional).
    """
    if default is not None and not request.get_data(cache=True):
        data: Any = default
    else:
        data = json_object_body()
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_request(field_errors(error)) from None


def json_object_body() -> dict[str, Any]:
    if not request.is_json:
        raise _body_problem("Send a JSON object (Content-Type: application/json).")
    try:
        data = json.loads(request.get_data(cache=True), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _body_problem("Not valid JSON.") from None
    if not isinstance(data, dict):
        raise _body_problem("The body must be a JSON object.")
    return data


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    errors = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        errors.append({"field": field, "message": _MESSAGES.get(item["type"]) or _message(item)})
    return errors


def _message(item: dict[str, Any]) -> str:
    context = item.get("ctx") or {}
    if item["type"] == "string_too_short" and context.get("min_length", 0) > 1:
        return f"Must be at least {context['min_length']} characters."
    if item["type"] == "string_too_short":
        return "This field is required."
    if item["type"] == "string_too_long":
        return f"Must be at most {context['max_length']} characters."
    if item["type"] == "literal_error":
        return f"Must be one of: {context.get('expected', 'the documented values')}."
    if item["type"] == "value_error":
        return str(context.get("error", item["msg"]))
    return str(item["msg"])


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259), and we could not echo them back as JSON.
    raise ValueError(f"{name} is not JSON")


def _body_problem(message: str):
    return invalid_request([{"field": "body", "message": message}])
