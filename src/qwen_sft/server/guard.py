"""ASGI middleware run before routing: the API key, then the body size."""

from __future__ import annotations

import hmac

from qwen_sft.server.errors import error_response

OPEN_PATHS = {"/health"}  # everything else needs the API key when one is set


class Guard:
    """API key, then body size (Content-Length and the bytes actually received, for chunked uploads). The body
    is buffered (at most max_body_bytes) and replayed to the app; after it, the app's `receive` gets the
    client's disconnect notice, which both streaming and non-streaming routes watch."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key and scope["path"] not in OPEN_PATHS and not self._authorized(headers.get(b"authorization", b"")):
            return await error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                        code="invalid_api_key", type="authentication_error")(scope, receive, send)
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            return await error_response(400, "invalid Content-Length header")(scope, receive, send)
        if int(declared) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the disconnect notice

        await self.app(scope, replay, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _too_large(self, scope, receive, send):
        message = f"request body is larger than this server's limit of {self.max_body_bytes} bytes"
        await error_response(413, message, code="request_too_large")(scope, receive, send)
