"""API errors as the real gateway reports them: HTTP status, Code and Message."""

from __future__ import annotations


class ApiError(Exception):
    """Raised by an action handler; the server turns it into the error JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def missing_parameter(name: str) -> ApiError:
    return ApiError(
        400,
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
    )


def invalid_parameter(name: str, detail: str = "") -> ApiError:
    message = f'The specified parameter "{name}" is not valid.'
    if detail:
        message += f" {detail}"
    return ApiError(400, "InvalidParameter", message)


THROTTLED = ("Throttling.User", "Request was denied due to user flow control.")
INTERNAL_ERROR = (
    "InternalError",
    "The request processing has failed due to some unknown error, exception or failure.",
)
SERVICE_UNAVAILABLE = (
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
)
