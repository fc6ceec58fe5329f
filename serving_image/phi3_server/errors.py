"""Every error leaves the server in OpenAI's shape: ``{"error": {message, type, param, code}}``.

Client mistakes (bad JSON, wrong types, unknown fields, too long) are 4xx with a message that
names the field; only faults of the server itself are 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPE_BY_STATUS.get(self.status_code, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def _field_path(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or "body"


def validation_error(errors: Sequence[Any]) -> APIError:
    """One 400 naming each bad field, e.g. ``messages.0.role: Input should be 'system', ...``."""
    first = errors[0]
    if first["type"] == "json_invalid":
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        position = first["loc"][-1]
        return APIError(
            400, f"malformed JSON body: {detail} (at character {position})", code="invalid_json"
        )
    messages = [f"{_field_path(e['loc'])}: {e['msg']}" for e in errors]
    return APIError(400, "; ".join(messages), param=_field_path(first["loc"]), code="invalid_value")


async def _on_api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return error.response()


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return validation_error(error.errors()).response()


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    message = f"{request.method} {request.url.path}: {error.detail}"
    return APIError(error.status_code, message, headers=error.headers).response()


async def _on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return APIError(500, "internal server error").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
