"""The one place a JSON request body becomes data, for every API blueprint.

Anything that is not a JSON object of the right shape (not JSON at all, NaN or Infinity, a
nesting too deep to parse, an array, wrong types, missing or unknown fields) is a 422
`invalid_request` with `errors: [{"field", "message"}]`, before any view touches the database.
So is a value no database can store or we could not write back out, named by its field: a
lone UTF-16 surrogate (`"\\ud800"` in JSON parses, but is not Unicode), a NUL character (PostgreSQL
refuses it in text) and nesting deeper than `MAX_JSON_DEPTH`.
A body above MAX_CONTENT_LENGTH never gets here: 413 first, however it is framed
(`refuse_oversized_stream` covers chunked bodies, which carry no Content-Length).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import Flask, abort, request
from pydantic import BaseModel, ValidationError

from .errors import invalid_request

Model = TypeVar("Model", bound=BaseModel)

# Deeper than any honest `context` or `metadata`, far below Python's recursion limit, which
# serialising a ~1,000-deep value would hit.
MAX_JSON_DEPTH = 32
_TOO_DEEP = f"Nested too deeply (at most {MAX_JSON_DEPTH} levels)."

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
    except RecursionError:
        raise _body_problem(_TOO_DEEP) from None
    except ValueError:
        raise _body_problem("Not valid JSON.") from None
    if not isinstance(data, dict):
        raise _body_problem("The body must be a JSON object.")
    errors = unstorable_values(data)
    if errors:
        raise invalid_request(errors)
    return data


def unstorable_values(data: dict[str, Any]) -> list[dict[str, str]]:
    """Field errors for values that cannot be stored or echoed: too deep, a lone surrogate,
    NUL. Walked without recursion, so no depth can make the check itself fail."""
    errors: list[dict[str, str]] = []
    pending: list[tuple[str, Any, int]] = [(str(key), value, 1) for key, value in data.items()]
    pending.extend(("body", key, 1) for key in data)
    while pending:
        field, value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            # Named by the top-level field: a path 33 levels long helps nobody.
            errors.append({"field": field.split(".")[0], "message": _TOO_DEEP})
        elif isinstance(value, dict):
            pending.extend((f"{field}.{key}", item, depth + 1) for key, item in value.items())
            pending.extend((field, key, depth + 1) for key in value)
        elif isinstance(value, list):
            pending.extend(
                (f"{field}.{index}", item, depth + 1) for index, item in enumerate(value)
            )
        elif isinstance(value, str) and (problem := _string_problem(value)):
            errors.append({"field": field, "message": problem})
    return _first_per_field(errors)


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "Must not contain NUL characters."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode text (a lone surrogate is not)."
    return None


def _first_per_field(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for error in reversed(errors):
        seen.setdefault(error["field"], error)
    return sorted(seen.values(), key=lambda error: error["field"])


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


def refuse_oversized_stream() -> None:
    """413 for a chunked body over MAX_CONTENT_LENGTH (a before_request hook).

    Werkzeug stops reading a stream without Content-Length at the limit and hands the view the
    first MAX_CONTENT_LENGTH bytes as if they were the whole body; one byte more on the wire
    means the body was cut, and a cut body is refused, never half-used.
    """
    limit = request.max_content_length
    if limit is None or "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return
    if "wsgi.input_terminated" not in request.environ:
        return
    if len(request.get_data(cache=True)) >= limit and request.environ["wsgi.input"].read(1):
        abort(413)


def init_app(app: Flask) -> None:
    app.before_request(refuse_oversized_stream)
