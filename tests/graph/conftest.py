"""An emulated mailbox with known contents, and Graph clients pointed at it.

Each test module gets its own emulator process, loaded from a description file written
here, so every byte a test downloads can be compared with what the emulator was given.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from exchange_fuse.auth import ClientCertificate, ClientSecret, TokenProvider
from exchange_fuse.graph import GraphClient
from exchange_fuse.mail import FolderRecord, MailboxAddress
from tests.support.emulator import GRAPH_SCOPE, Emulator, running_emulator

MAILBOX = MailboxAddress("graph.test@example.com")
DENIED = MailboxAddress("outside.policy@example.com")
ON_PREMISES = MailboxAddress("on.premises@example.com")

WIDE_CHILDREN = 13  # more than Graph's default page of 10
DEEP_CHILDREN = 12
PAGED_MESSAGES = 23
DELTA_MESSAGES = 7
BIG_SIZE = 1_500_000


def content_of(seed: int, size: int) -> bytes:
    """Deterministic incompressible bytes, the attachment content tests compare against."""
    return random.Random(seed).randbytes(size)


REPORT_PDF = content_of(1, 40_000)
BIG_BIN = content_of(2, BIG_SIZE)
LOGO_PNG = content_of(3, 700)


def _file(name: str, content: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "content_type": content_type,
        "content_base64": base64.b64encode(content).decode("ascii"),
        **extra,
    }


def paged_content(index: int) -> bytes:
    return f"message {index} of the paged folder\n".encode()


def description() -> dict[str, Any]:
    """The test mailbox: wide and deep folders, a paged folder, every attachment kind."""
    deep = [{"name": f"Leaf {index:02d}"} for index in range(DEEP_CHILDREN)]
    wide: list[dict[str, Any]] = [{"name": f"Sub {index:02d}"} for index in range(WIDE_CHILDREN)]
    wide[0]["folders"] = deep
    paged = [
        {
            "subject": f"Paged {index:02d}",
            "received": f"2024-02-{index + 1:02d}T08:00:00Z",
            "sender": "Reports <reports@example.com>",
            "attachments": [_file(f"m{index:02d}.txt", paged_content(index), "text/plain")],
        }
        for index in range(PAGED_MESSAGES)
    ]
    kinds = [
        {
            "subject": "All kinds",
            "received": "2024-03-01T09:30:00Z",
            "sender": "Dana <dana@example.com>",
            "attachments": [
                _file("report.pdf", REPORT_PDF, "application/pdf"),
                {"kind": "item", "name": "Forwarded", "item": {"subject": "Forwarded"}},
                {
                    "kind": "item",
                    "name": "Review",
                    "item": {
                        "type": "event",
                        "subject": "Review",
                        "start": {"dateTime": "2024-04-10T13:00:00", "timeZone": "UTC"},
                        "end": {"dateTime": "2024-04-10T14:00:00", "timeZone": "UTC"},
                    },
                },
                {
                    "kind": "item",
                    "name": "Dana Fischer",
                    "item": {"type": "contact", "displayName": "Dana Fischer"},
                },
                {
                    "kind": "reference",
                    "name": "Plan.xlsx",
                    "url": "https://contoso.example/sites/plans/Plan.xlsx",
                },
            ],
        },
        {
            "subject": "Inline only",
            "received": "2024-03-02T09:30:00Z",
            "attachments": [
                _file("logo.png", LOGO_PNG, "image/png", is_inline=True, content_id="logo")
            ],
        },
    ]
    scratch = [
        {
            "subject": f"Scratch {index}",
            "received": f"2024-05-0{index + 1}T10:00:00Z",
            "attachments": [
                _file("first.txt", b"first\n", "text/plain"),
                _file("second.txt", b"second\n", "text/plain"),
            ],
        }
        for index in range(4)
    ]
    delta = [
        {
            "subject": f"Delta {index}",
            "received": f"2024-06-0{index + 1}T10:00:00Z",
            "attachments": [_file("delta.txt", f"delta {index}\n".encode(), "text/plain")],
        }
        for index in range(DELTA_MESSAGES)
    ]
    return {
        "folders": [
            {"name": "Wide", "folders": wide},
            {"name": "Paged", "messages": paged},
            {"name": "Kinds", "messages": kinds},
            {
                "name": "Big",
                "messages": [
                    {
                        "subject": "Big one",
                        "attachments": [_file("big.bin", BIG_BIN, "application/octet-stream")],
                    }
                ],
            },
            {"name": "Scratch", "messages": scratch},
            {"name": "Delta", "messages": delta},
            {"name": "Elsewhere"},
            {"name": "Hidden away", "hidden": True},
        ]
    }


@dataclass(frozen=True)
class CertificateFiles:
    key_and_certificate: Path  # PEM: private key then certificate
    certificate: Path  # PEM: the certificate alone (what the app registration holds)
    pfx: Path
    pfx_passphrase: str


def make_certificate(directory: Path, name: str) -> CertificateFiles:
    """A self-signed certificate for a client assertion, in PEM and PKCS#12 form."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    passphrase = "pfx passphrase"
    pfx = serialization.pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,
        certificate,
        None,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    files = CertificateFiles(
        key_and_certificate=directory / f"{name}.pem",
        certificate=directory / f"{name}.crt",
        pfx=directory / f"{name}.pfx",
        pfx_passphrase=passphrase,
    )
    files.key_and_certificate.write_bytes(key_pem + certificate_pem)
    files.certificate.write_bytes(certificate_pem)
    files.pfx.write_bytes(pfx)
    return files


@dataclass(frozen=True)
class Bed:
    emulator: Emulator
    certificate: CertificateFiles  # registered with the emulator
    stranger: CertificateFiles  # not registered


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """One emulator per test module, serving the described mailbox."""
    directory = tmp_path_factory.mktemp("graph")
    mailbox_file = directory / "mailbox.json"
    mailbox_file.write_text(json.dumps(description()))
    empty = directory / "empty.json"
    empty.write_text("{}")
    certificate = make_certificate(directory, "registered")
    stranger = make_certificate(directory, "stranger")
    args = [
        f"--mailbox={MAILBOX}={mailbox_file}",
        f"--mailbox={DENIED}={empty}",
        f"--mailbox={ON_PREMISES}={empty}",
        f"--cert={certificate.certificate}",
        "--fault-seed=20240301",
    ]
    with running_emulator(directory / "state", *args) as emulator:
        yield Bed(emulator, certificate, stranger)


@pytest.fixture
def emulator(bed: Bed) -> Iterator[Emulator]:
    """The module's emulator, its faults back to their start settings after the test."""
    yield bed.emulator
    bed.emulator.reset_faults()


def token_provider(
    emulator: Emulator, credential: ClientSecret | ClientCertificate | None = None, **kw: Any
) -> TokenProvider:
    options: dict[str, Any] = {
        "authority_url": emulator.authority_url,
        "tenant_id": emulator.tenant_id,
        "client_id": emulator.client_id,
        "credential": credential or ClientSecret(emulator.client_secret),
        "scope": GRAPH_SCOPE,
        "ca_bundle": emulator.ca_bundle,
    }
    options.update(kw)
    return TokenProvider(**options)


@asynccontextmanager
async def graph_client(emulator: Emulator, **options: Any) -> AsyncIterator[GraphClient]:
    """A GraphClient on the emulator with its own token provider."""
    async with (
        token_provider(emulator) as tokens,
        GraphClient(emulator.graph_url, tokens, ca_bundle=emulator.ca_bundle, **options) as client,
    ):
        yield client


def folder_named(folders: list[FolderRecord], name: str) -> FolderRecord:
    matches = [folder for folder in folders if folder.display_name == name]
    assert len(matches) == 1, f"{name!r}: {len(matches)} folders"
    return matches[0]
