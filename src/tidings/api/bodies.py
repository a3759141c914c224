"""Reading a request body with a bound, for the routes that read bodies themselves."""

from __future__ import annotations

from starlette.requests import Request

from tidings.domain.errors import PayloadTooLarge

__all__ = ["read_limited"]


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or ``413 payload_too_large`` as soon as it is known to pass ``limit``
    bytes (from ``Content-Length``, or while reading): never more is held in memory."""
    too_large = PayloadTooLarge(f"The body is larger than {limit // 1024} KB.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
