"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}`, 4xx for client mistakes, 5xx for
server faults or overload."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qwen_sft.server.schema import ErrorResponse

log = logging.getLogger(__name__)
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 413, 500, 503)}  # for the OpenAPI schema


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type


def error_response(status: int, message: str, param=None, code=None, type="invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err.status, err.message, err.param, err.code, err.type)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):  # OpenAI answers 400, not FastAPI's 422
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(400, "request body is not valid JSON", None, "invalid_json")
        # pydantic puts the union member tried ("str", "list[TextPart]") in the location: not a request field
        where = ".".join(str(x) for x in first.get("loc", ())[1:]
                         if not (isinstance(x, str) and (x in ("str", "int", "float", "bool") or "[" in x)))
        if not where:  # the body as a whole: a JSON array, or a form post from `curl -d` without -H
            return error_response(400, "the request body must be a JSON object (Content-Type: application/json)",
                                  None, first.get("type"))
        if first.get("type") == "extra_forbidden":
            return error_response(400, f"{where}: this server does not support this field", where,
                                  "unsupported_field")
        return error_response(400, f"{where}: {first.get('msg')}", where, first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), code=f"http_{err.status_code}")

    @app.exception_handler(Exception)
    async def crash(request, err: Exception):  # a server bug: say so, keep serving
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error", type="server_error")
