"""The ``smtp`` provider: email through an SMTP server, with aiosmtplib.

``data``: ``host``, ``port``, ``username?``, ``password?`` (secret), ``tls``: ``"none"``
(plain), ``"starttls"`` (upgrade after connecting; refused if the server cannot) or
``"tls"`` (TLS from the start, usually port 465); ``validate_certs?`` (true),
``timeout?`` (seconds, 30), ``pool_size?`` (connections kept open, 4).

Connections are pooled: a send takes an idle connection (one idle for more than 30 s is
checked with ``NOOP`` first), and gives it back after a clean transaction; a connection
that saw any error is closed. The message is MIME (``multipart/alternative`` when it has
both text and HTML) with ``From``, ``To``, ``Cc``, ``Reply-To``, ``Subject``, ``Date``, a
``Message-ID`` (kept as the provider message id) and the message's own headers
(``List-Unsubscribe`` and the like) passed through; ``Bcc`` recipients are only on the
envelope.

Answers: a reply 4xx (and timeouts, refused or dropped connections) is transient, a 5xx
is permanent; when every recipient is refused, transient if any refusal was a 4xx.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import re
import secrets
import time
from collections.abc import Callable, Mapping
from email.header import Header
from email.message import Message as MimeMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import aiosmtplib

from tidings.domain.channels import DeliveryResult, EmailMessage, Message, Outcome
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers._data import optional_str, required_str

__all__ = ["CHANNEL", "SECRET_FIELDS", "SmtpProvider", "build", "mime_message"]

CHANNEL = "email"
SECRET_FIELDS: frozenset[str] = frozenset({"password"})
_TLS = ("none", "starttls", "tls")
_CHECK_IDLE_AFTER = 30.0
# Headers the provider writes itself; a message's own headers cannot replace them.
_OWN = frozenset({"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id"})
_OWN |= {"mime-version", "content-type", "content-transfer-encoding"}
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII but ":" (RFC 5322)
_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=998)


def _check_header(name: str, value: str) -> None:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"header name {name[:40]!r} is not valid")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break")


def _encoded(value: str, name: str) -> str:
    # RFC 2047 encoded words, folded knowing the header's name (so that the first line
    # is not left empty, which readers take as a leading space).
    return Header(value, "utf-8", header_name=name).encode()


def mime_message(message: EmailMessage) -> tuple[str, bytes]:
    """The ``Message-ID`` and MIME bytes of ``message`` (ValueError for a header that would
    not be safe: a line break in a value could add headers). Built with the email
    package's classic API: a third of the CPU of ``email.policy.SMTP``'s."""
    own = {
        "From": email.utils.formataddr(
            (message.from_name or "", message.from_address), charset="utf-8"
        ),
        "To": message.to,
        "Cc": ", ".join(message.cc),
        "Reply-To": message.reply_to or "",
    }
    for name, value in (*own.items(), ("Subject", message.subject), *message.headers.items()):
        _check_header(name, value)
    if message.text is not None and message.html is not None:
        # Its own boundary: the parts are base64, whose lines never start with "--", so
        # the generator need not search them for it (a regex compiled per message).
        mime: MimeMessage = MIMEMultipart("alternative", boundary=f"=_{secrets.token_hex(16)}")
        mime.attach(MIMEText(message.text, "plain", "utf-8"))
        mime.attach(MIMEText(message.html, "html", "utf-8"))
    elif message.html is not None:
        mime = MIMEText(message.html, "html", "utf-8")
    else:
        mime = MIMEText(message.text or "", "plain", "utf-8")
    for name, value in own.items():
        if value:
            mime[name] = value
    mime["Subject"] = (
        message.subject if message.subject.isascii() else Header(message.subject, "utf-8").encode()
    )
    mime["Date"] = email.utils.formatdate(usegmt=True)
    domain = message.from_address.rpartition("@")[2] or "tidings.invalid"
    message_id = email.utils.make_msgid(domain=domain)
    mime["Message-ID"] = message_id
    for name, value in message.headers.items():
        if name.lower() not in _OWN:
            mime[name] = value if value.isascii() else _encoded(value, name)
    return message_id, mime.as_bytes(policy=_POLICY)


class SmtpProvider:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: str = "none",
        username: str | None = None,
        password: str | None = None,
        validate_certs: bool = True,
        timeout: float = 30.0,
        pool_size: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.clock = clock
        self.pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_opened = 0

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            validate_certs=self.validate_certs,
            timeout=self.timeout,
        )
        await client.connect()  # logs in when a username is set
        self.connections_opened += 1
        return client

    async def _take(self) -> aiosmtplib.SMTP:
        while self._idle:
            client, used_at = self._idle.pop()
            if not client.is_connected:
                continue
            if self.clock() - used_at > _CHECK_IDLE_AFTER:
                try:
                    await client.noop()
                except Exception:  # the server closed it meanwhile: open another
                    await _close(client)
                    continue
            return client
        return await self._connect()

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, EmailMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="smtp: not an email message")
        try:
            message_id, mime = mime_message(message)
        except Exception as exc:  # a header value with a line break, …
            return DeliveryResult(Outcome.PERMANENT, reason=f"smtp: bad message: {exc}")
        recipients = [message.to, *message.cc, *message.bcc]
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections and the semaphore belong to one loop
            self._loop = loop
            self._slots = asyncio.Semaphore(self.pool_size)
            self._idle = []
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._take()
                await client.sendmail(message.from_address, recipients, mime)
            except Exception as exc:  # never raise from send
                if client is not None:
                    await _close(client)
                return _classify(exc)
            self._idle.append((client, self.clock()))
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id=message_id)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await client.quit()
            except Exception:
                await _close(client)


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        client.close()
    except Exception:  # already closed
        return


def _by_code(code: int, text: str) -> DeliveryResult:
    outcome = Outcome.TRANSIENT if 400 <= code < 500 else Outcome.PERMANENT
    return DeliveryResult(outcome, reason=f"smtp: {code} {text}".strip())


def _classify(exc: Exception) -> DeliveryResult:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = exc.recipients
        transient = any(400 <= r.code < 500 for r in refusals)
        details = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refusals)
        return DeliveryResult(
            Outcome.TRANSIENT if transient else Outcome.PERMANENT,
            reason=f"smtp: every recipient refused: {details}",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, exc.message)
    if isinstance(exc, OSError):  # timeouts, refused and dropped connections
        return DeliveryResult(Outcome.TRANSIENT, reason=f"smtp: {type(exc).__name__}: {exc}")
    return DeliveryResult(Outcome.PERMANENT, reason=f"smtp: {type(exc).__name__}: {exc}")


def build(data: Mapping[str, Any]) -> SmtpProvider:
    tls = data.get("tls", "none")
    if tls not in _TLS:
        raise InvalidRequest("data.tls must be none, starttls or tls.", param="data.tls")
    port = data.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidRequest("data.port must be a port number.", param="data.port")
    pool_size = data.get("pool_size", 4)
    if not isinstance(pool_size, int) or not 1 <= pool_size <= 100:
        raise InvalidRequest("data.pool_size must be 1 to 100.", param="data.pool_size")
    return SmtpProvider(
        host=required_str(data, "host"),
        port=port,
        tls=tls,
        username=optional_str(data, "username"),
        password=optional_str(data, "password"),
        validate_certs=data.get("validate_certs", True) is not False,
        timeout=float(data.get("timeout") or 30.0),
        pool_size=pool_size,
    )
