"""The HTML forms of the account pages (Flask-WTF: CSRF token included).

Field rules match the JSON API's: emails are normalised and checked by `schemas.email_problem`,
passwords are 12–256 characters for new passwords.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SubmitField
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
    # Unticked, the login ends with the browser; ticked, it lasts REMEMBER_ME_DAYS.
    remember = BooleanField("Remember me")
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


# The account page's forms: one page holds them all, so each has its own prefix (field ids).

_NO_LONGER_THAN_A_PASSWORD = Length(max=PASSWORD_MAX_LENGTH, message="The password is wrong.")
_GIVEN_PASSWORD = [DataRequired("Enter your password."), _NO_LONGER_THAN_A_PASSWORD]


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(
        "Current password",
        validators=[DataRequired("Enter your current password."), _NO_LONGER_THAN_A_PASSWORD],
    )
    new_password = PasswordField("New password", validators=[_NEW_PASSWORD])
    submit = SubmitField("Change password")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, prefix="password", **kwargs)


class ChangeEmailForm(FlaskForm):
    new_email = EmailField("New email address", filters=[_normalise], validators=[_valid_email])
    password = PasswordField("Your password", validators=_GIVEN_PASSWORD)
    submit = SubmitField("Change email")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, prefix="email", **kwargs)


class LinkIdentityForm(FlaskForm):
    """Linking a provider account adds a way in that outlives a password reset: confirmed
    with the password, as every other change to how one gets in."""

    password = PasswordField("Your password", validators=_GIVEN_PASSWORD)
    submit = SubmitField("Link account")


class DeleteAccountForm(FlaskForm):
    password = PasswordField("Your password", validators=_GIVEN_PASSWORD)
    submit = SubmitField("Delete account")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, prefix="delete", **kwargs)
