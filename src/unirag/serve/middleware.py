"""The gate every request passes (a plain ASGI middleware, so streams and disconnects pass through
untouched): metrics by route and status, the API key, the body size limit."""

from __future__ import annotations

import hmac
import time
from typing import Any

from unirag.serve.errors import error_response

OPEN_PATHS = ("/health", "/ready")  # liveness probes stay open; the page's own files too (see app.py)


class Gate:
    """``api_key``: Bearer token compared in constant time (paths in ``open_paths`` and ``open_prefixes``
    stay open); ``max_body_bytes``: larger bodies get 413 before any handler reads them."""

    def __init__(self, app: Any, metrics: Any, api_key: str | None, max_body_bytes: int,
                 open_paths: tuple[str, ...] = OPEN_PATHS, open_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.metrics = metrics
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes
        self.open_paths = set(open_paths)
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("/" if scope["path"] == "/" else "unmatched")
            self.metrics.observe(label, scope["method"], status["code"], time.perf_counter() - t0)

    def _authorized(self, scope: dict) -> bool:
        path = scope["path"]
        if self.key is None or path in self.open_paths or scope["method"] == "OPTIONS":
            return True
        if scope["method"] in ("GET", "HEAD") and (path == "/" or path.startswith(self.open_prefixes or ("\0",))):
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _handle(self, scope: dict, receive: Any, send: Any) -> None:
        if not self._authorized(scope):
            await error_response(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                 "invalid_api_key", None, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        too_big = error_response(413, f"request body over the limit of {self.limit} bytes (max_body_bytes)",
                                 "body_too_large", "max_body_bytes")
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            await too_big(scope, receive, send)
            return
        chunks, size = [], 0
        while True:  # read the body now, so that no handler ever sees more than the limit
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then the connection's own messages (http.disconnect)

        await self.app(scope, replay, send)
