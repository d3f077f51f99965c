"""Every error the server sends is JSON ``{"error": {"message", "type", "code", "param"}}`` (OpenAI's
shape), never a stack trace: request validation, HTTP errors, the door's ``ConfigError`` and 500s."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("unirag.serve")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
         504: "timeout_error"}


class APIError(Exception):
    """An error answered as JSON with ``status``; ``param`` names the request field at fault."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"message": message, "type": TYPES.get(status, "server_error" if status >= 500 else
                                                            "invalid_request_error"),
                      "code": code, "param": param}}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None):
    """A ``JSONResponse`` carrying :func:`error_body`."""
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install(app: Any) -> None:
    """Register the handlers on a FastAPI app."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from unirag.config.base import ConfigError

    @app.exception_handler(APIError)
    async def _api(request, exc: APIError):
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        param = _loc(first.get("loc", ()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return error_response(422, f"{param}: {first.get('msg', 'invalid')}{more}", "invalid_value", param)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), code, None, getattr(exc, "headers", None))

    @app.exception_handler(ConfigError)
    async def _config(request, exc: ConfigError):
        msg = str(exc)
        param = msg.split(" ", 1)[0].removeprefix("SamplingParams.").rstrip(":") if msg else None
        return error_response(422, msg, "invalid_value", param)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error")
