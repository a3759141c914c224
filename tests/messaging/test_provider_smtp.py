"""The smtp provider delivering real mail to a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gc
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tidings.domain.channels import EmailMessage, Outcome
from tidings.messaging.providers import build_adapter
from tidings.messaging.providers.smtp import SmtpProvider


@dataclass
class Inbox:
    """An aiosmtpd handler: keeps what it receives; ``refuse_*`` make it answer codes."""

    mail: list[Envelope] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    refuse_data: str | None = None
    sessions: set[int] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.sessions.add(id(session))
        if self.refuse_data is not None:
            return self.refuse_data
        self.mail.append(envelope)
        return "250 Message accepted for delivery"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (_text(data.login), _text(data.password)) == (
        "mailer",
        "s3cret",
    )
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def smtpd() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (the controller checks it by connecting)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "to": "ada@example.com",
        "from_address": "news@shop.example",
        "from_name": "Shop News",
        "subject": "Winter sale – 20% off",
        "html": '<p>Hello Ada, <a href="https://shop.example/sale">shop now</a></p>',
        "text": "Hello Ada, shop now: https://shop.example/sale",
        "reply_to": "help@shop.example",
        "cc": ("cc@example.com",),
        "bcc": ("audit@example.com",),
        "headers": {
            "List-Unsubscribe": "<https://t.example/unsubscribe/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    values.update(overrides)
    return EmailMessage(**values)


async def test_real_mail_arrives_with_its_headers_and_parts(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    result = await adapter.send(_message())
    await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [envelope] = inbox.mail
    assert envelope.mail_from == "news@shop.example"
    assert envelope.rcpt_tos == ["ada@example.com", "cc@example.com", "audit@example.com"]
    parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert parsed["From"] == "Shop News <news@shop.example>"
    assert parsed["To"] == "ada@example.com"
    assert parsed["Cc"] == "cc@example.com"
    assert parsed["Bcc"] is None  # only on the envelope
    assert parsed["Reply-To"] == "help@shop.example"
    assert parsed["Subject"] == "Winter sale – 20% off"
    assert parsed["List-Unsubscribe"] == "<https://t.example/unsubscribe/abc>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"] == result.provider_message_id
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert (
        text is not None
        and text.get_content().strip() == "Hello Ada, shop now: https://shop.example/sale"
    )
    assert html is not None and 'href="https://shop.example/sale"' in html.get_content()


async def test_html_only_and_own_headers_cannot_be_replaced(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    message = _message(
        text=None, cc=(), bcc=(), headers={"From": "evil@x.example", "X-Campaign": "7"}
    )
    assert (await adapter.send(message)).outcome is Outcome.ACCEPTED
    await adapter.aclose()
    parsed = email.message_from_bytes(inbox.mail[0].original_content, policy=email.policy.default)
    assert parsed.get_all("From") == ["Shop News <news@shop.example>"]
    assert parsed["X-Campaign"] == "7"
    assert parsed.get_content_type() == "text/html"


async def test_a_header_with_a_line_break_is_refused_not_sent(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    result = await adapter.send(_message(subject="Hi\r\nBcc: victim@example.com"))
    header = await adapter.send(_message(headers={"X-Campaign": "7\nBcc: victim@example.com"}))
    name = await adapter.send(_message(headers={"Bcc: victim@example.com\nX": "1"}))
    await adapter.aclose()
    assert result.outcome is Outcome.PERMANENT
    assert header.outcome is Outcome.PERMANENT and name.outcome is Outcome.PERMANENT
    assert inbox.mail == []


async def test_connections_are_reused(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter(
        "smtp", {"host": "127.0.0.1", "port": port, "tls": "none", "pool_size": 2}
    )
    assert isinstance(adapter, SmtpProvider)
    for i in range(5):
        assert (
            await adapter.send(_message(to=f"u{i}@example.com", cc=(), bcc=()))
        ).outcome is Outcome.ACCEPTED
    results = await asyncio.gather(*(adapter.send(_message(cc=(), bcc=())) for _ in range(10)))
    await adapter.aclose()
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert len(inbox.mail) == 15
    assert adapter.connections_opened <= 2


async def test_login_with_username_and_password(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    good = build_adapter(
        "smtp",
        {
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "username": "mailer",
            "password": "s3cret",
        },
    )
    assert (await good.send(_message())).outcome is Outcome.ACCEPTED
    await good.aclose()
    bad = build_adapter(
        "smtp",
        {
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "username": "mailer",
            "password": "wrong",
        },
    )
    refused = await bad.send(_message())
    await bad.aclose()
    assert refused.outcome is Outcome.PERMANENT and "535" in (refused.reason or "")
    assert len(inbox.mail) == 1


@pytest.mark.parametrize(
    ("refuse", "outcome", "code"),
    [
        ({"refuse_data": "451 4.3.0 Try again later"}, Outcome.TRANSIENT, "451"),
        ({"refuse_data": "554 5.7.1 Rejected as spam"}, Outcome.PERMANENT, "554"),
        ({"refuse_rcpt": {"ada@example.com": "550 5.1.1 No such user"}}, Outcome.PERMANENT, "550"),
        ({"refuse_rcpt": {"ada@example.com": "452 4.2.2 Mailbox full"}}, Outcome.TRANSIENT, "452"),
    ],
)
async def test_smtp_replies_are_classified(
    smtpd: tuple[Inbox, int], refuse: dict[str, Any], outcome: Outcome, code: str
) -> None:
    inbox, port = smtpd
    for name, value in refuse.items():
        setattr(inbox, name, value)
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    result = await adapter.send(_message(cc=(), bcc=()))
    # The connection that saw the error is dropped; the next send works on a new one.
    inbox.refuse_data, inbox.refuse_rcpt = None, {}
    after = await adapter.send(_message(cc=(), bcc=()))
    await adapter.aclose()
    assert result.outcome is outcome
    assert code in (result.reason or "")
    assert after.outcome is Outcome.ACCEPTED


async def test_no_server_is_transient() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    adapter = build_adapter(
        "smtp", {"host": "127.0.0.1", "port": port, "tls": "none", "timeout": 2}
    )
    result = await adapter.send(_message())
    await adapter.aclose()
    assert result.outcome is Outcome.TRANSIENT


async def test_starttls_refused_by_a_server_without_it(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "starttls"})
    result = await adapter.send(_message())
    await adapter.aclose()
    assert result.outcome is Outcome.PERMANENT  # never falls back to plain text
    assert inbox.mail == []


# The first loop's connections are collected after asyncio.run closed that loop (as in a
# worker that dropped its loop): their transports complain that the loop is closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_adapter_keeps_working_from_another_event_loop(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    for _ in range(2):
        assert asyncio.run(adapter.send(_message(cc=(), bcc=()))).outcome is Outcome.ACCEPTED
    assert len(inbox.mail) == 2
    gc.collect()  # the first loop's leftovers, here rather than at exit


async def test_long_non_ascii_subjects_and_names_arrive_intact(smtpd: tuple[Inbox, int]) -> None:
    inbox, port = smtpd
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    subject = "Ünïcödé – déjà vu, " * 8
    message = _message(
        subject=subject, from_name="Café Ämber", text="Grüße", html=None, cc=(), bcc=()
    )
    assert (await adapter.send(message)).outcome is Outcome.ACCEPTED
    await adapter.aclose()
    parsed = email.message_from_bytes(inbox.mail[0].original_content, policy=email.policy.default)
    assert parsed["Subject"] == subject
    assert parsed["From"] == "Café Ämber <news@shop.example>"
    assert parsed.get_content().strip() == "Grüße"


def _self_signed(tmp: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 made here."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_mail_over_tls(tmp_path: Path, mode: str) -> None:
    """STARTTLS (required by the server) and TLS from the start, with a self-signed
    certificate: sent with validate_certs false, refused with the default."""
    inbox = Inbox()
    context = _self_signed(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if mode == "starttls":
        controller = Controller(
            inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        data = {"host": "127.0.0.1", "port": port, "tls": mode, "timeout": 5}
        adapter = build_adapter("smtp", {**data, "validate_certs": False})
        result = await adapter.send(_message(cc=(), bcc=()))
        await adapter.aclose()
        strict = build_adapter("smtp", data)
        refused = await strict.send(_message(cc=(), bcc=()))
        await strict.aclose()
        plain = build_adapter("smtp", {**data, "tls": "none", "timeout": 1})
        unencrypted = await plain.send(_message(cc=(), bcc=()))
        await plain.aclose()
    finally:
        controller.stop()
    assert result.outcome is Outcome.ACCEPTED
    assert refused.outcome is not Outcome.ACCEPTED  # an unverifiable certificate
    assert unencrypted.outcome is not Outcome.ACCEPTED  # the server wants TLS
    assert len(inbox.mail) == 1
