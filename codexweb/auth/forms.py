"""The HTML forms of the account pages (Flask-WTF: CSRF token included).

Field rules match the JSON API's: emails are normalised and checked by `schemas.email_problem`,
passwords are 12–256 characters for new passwords.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Length, ValidationError

from .accounts import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, normalise_email
from .schemas import email_problem

_NEW_PASSWORD = Length(
    min=PASSWORD_MIN_LENGTH,
    max=PASSWORD_MAX_LENGTH,
    message=f"Use {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters.",
)


def _normalise(value: str | None) -> str:
    return normalise_email(value or "")


def _valid_email(form: FlaskForm, field: EmailField) -> None:
    problem = email_problem(field.data)
    if problem:
        raise ValidationError(problem)


class RegisterForm(FlaskForm):
    email = EmailField("Email", filters=[_normalise], validators=[_valid_email])
    password = PasswordField("Password", validators=[_NEW_PASSWORD])
    submit = SubmitField("Create account")


class LoginForm(FlaskForm):
    email = EmailField(
        "Email", filters=[_normalise], validators=[DataRequired("Enter your email address.")]
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Enter your password."),
            Length(max=PASSWORD_MAX_LENGTH, message="The email or password is wrong."),
        ],
    )
    submit = SubmitField("Log in")


class EmailForm(FlaskForm):
    email = EmailField("Email", filters=[_normalise], validators=[_valid_email])
    submit = SubmitField("Send reset link")


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[_NEW_PASSWORD])
    submit = SubmitField("Set new password")


class ConfirmForm(FlaskForm):
    """A form that is only a CSRF token and a button (log out, resend)."""

    submit = SubmitField("Confirm")
