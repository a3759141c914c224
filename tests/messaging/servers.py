"""Local stand-ins for third-party APIs: real HTTP/1.1 (h11) and HTTP/2 (h2) servers on
127.0.0.1 that record every request exactly as it arrived and answer what a test says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h11


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case; the last of a repeated name wins
    body: bytes
    http_version: str


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Responder = Callable[[Recorded], Reply]


class _Base:
    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda _: Reply())
        self.requests: list[Recorded] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Any:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class HttpServer(_Base):
    """HTTP/1.1 with keep-alive."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is h11.DONE:
                            break
                        if not data:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                recorded = Recorded(
                    method=request.method.decode(),
                    path=request.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in request.headers},
                    body=body,
                    http_version="1.1",
                )
                self.requests.append(recorded)
                reply = self.responder(recorded)
                headers = [(k, v) for k, v in reply.headers.items()]
                headers.append(("content-length", str(len(reply.body))))
                writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
                writer.write(conn.send(h11.Data(data=reply.body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            writer.close()


class Http2Server(_Base):
    """HTTP/2 with prior knowledge (h2c), as httpx speaks it to an http:// URL."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = [(_s(k), _s(v)) for k, v in event.headers]
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        pseudo = dict(h for h in headers if h[0].startswith(":"))
                        recorded = Recorded(
                            method=pseudo[":method"],
                            path=pseudo[":path"],
                            headers={k.lower(): v for k, v in headers if not k.startswith(":")},
                            body=bytes(body),
                            http_version="2",
                        )
                        self.requests.append(recorded)
                        reply = self.responder(recorded)
                        conn.send_headers(
                            event.stream_id,
                            [
                                (":status", str(reply.status)),
                                *reply.headers.items(),
                                ("content-length", str(len(reply.body))),
                            ],
                        )
                        conn.send_data(event.stream_id, reply.body, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        writer.write(conn.data_to_send())
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
