"""Bare Starlette + uvicorn JSON echo: the baseline that ``bench/ingest.py`` compares against.

One POST route that reads and parses the JSON body and answers 204, served with the same
uvicorn settings as ``tidings serve`` (one process, uvloop, httptools, no access log). It is
mounted at the ingest path so that the very same load-generator script drives both.
``GET /api/health`` exists only so the harness can tell when it is ready (and so the echo can
stand in for the real server with ``ingest.py --stand-in``); it is never part of a measurement.

Run: ``.venv/bin/python bench/echo_app.py --port 8100``
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

INGEST_PATH = "/api/client/events"


async def echo(request: Request) -> Response:
    await request.json()
    return Response(status_code=204)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "log_lag": 0})


app = Starlette(
    routes=[
        Route(INGEST_PATH, echo, methods=["POST"]),
        Route("/api/health", health, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=None,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
