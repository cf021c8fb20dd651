"""The token provider against the emulator's identity platform, through real MSAL."""

from __future__ import annotations

import trio

from exchange_fuse.auth import (
    AuthError,
    AuthUnavailableError,
    ClientCertificate,
    ClientSecret,
    TokenProvider,
)
from exchange_fuse.graph import GraphClient
from tests.graph.conftest import MAILBOX, Bed, token_provider
from tests.support.emulator import Emulator

WRONG_SECRET = "wrong-secret-value-7f3a9"


async def refused(tokens: TokenProvider) -> AuthError:
    async with tokens:
        try:
            await tokens.token()
        except AuthError as exc:
            return exc
    raise AssertionError("the token request was not refused")


async def test_a_secret_gets_a_token_that_graph_accepts(emulator: Emulator) -> None:
    async with token_provider(emulator) as tokens:
        first = await tokens.token()
        second = await tokens.token()
        async with GraphClient(emulator.graph_url, tokens, ca_bundle=emulator.ca_bundle) as client:
            root = await client.get_mailbox_root(MAILBOX)

    assert first == second
    assert tokens.acquisitions == 1
    assert root.display_name == "Top of Information Store"


async def test_wrong_secret_says_so_and_never_shows_it(emulator: Emulator) -> None:
    error = await refused(token_provider(emulator, ClientSecret(WRONG_SECRET)))

    assert error.error == "invalid_client"
    assert 7000215 in error.codes
    assert "secret is wrong" in error.hint
    shown = " ".join([str(error), repr(error), error.hint, error.description])
    assert WRONG_SECRET not in shown
    assert WRONG_SECRET not in repr(ClientSecret(WRONG_SECRET))


async def test_unknown_client_id_says_so(emulator: Emulator) -> None:
    tokens = token_provider(emulator, client_id="00000000-0000-0000-0000-000000000000")
    error = await refused(tokens)

    assert 700016 in error.codes
    assert "client (application) id" in error.hint


async def test_unknown_tenant_says_so(emulator: Emulator) -> None:
    tokens = token_provider(
        emulator,
        authority_url=emulator.authority_url.rsplit("/", 1)[0],
        tenant_id="no-such-tenant.example",
    )
    error = await refused(tokens)

    assert error.error == "invalid_tenant"
    assert "no-such-tenant.example" in error.hint


async def test_a_scope_without_default_is_refused(emulator: Emulator) -> None:
    error = await refused(token_provider(emulator, scope="https://graph.microsoft.com/Mail.Read"))

    assert error.error == "invalid_scope"
    assert "/.default" in error.hint


async def test_an_unreachable_authority_is_transient(emulator: Emulator) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket closes
    tokens = token_provider(emulator, authority_url=f"https://127.0.0.1:{port}", timeout=5)
    error = await refused(tokens)

    assert isinstance(error, AuthUnavailableError)
    assert "could not be reached" in error.hint


async def test_a_certificate_from_pem_or_pfx_gets_a_token(bed: Bed) -> None:
    pem = ClientCertificate.from_pem_file(bed.certificate.key_and_certificate)
    pfx = ClientCertificate.from_pfx(bed.certificate.pfx, bed.certificate.pfx_passphrase)

    for credential in (pem, pfx):
        async with token_provider(bed.emulator, credential) as tokens:
            assert await tokens.token()
    assert pem.thumbprint == pfx.thumbprint
    assert "PRIVATE KEY" not in repr(pem)
    assert bed.certificate.pfx_passphrase not in repr(pfx)


async def test_an_unregistered_certificate_is_refused(bed: Bed) -> None:
    stranger = ClientCertificate.from_pem_file(bed.stranger.key_and_certificate)
    error = await refused(token_provider(bed.emulator, stranger))

    assert error.error == "invalid_client"
    assert 700027 in error.codes
    assert "certificate" in error.hint


async def test_many_tasks_share_one_acquisition(emulator: Emulator) -> None:
    before = emulator.stats()["token_requests"]
    tokens_seen: list[str] = []

    async with token_provider(emulator) as tokens:

        async def ask() -> None:
            tokens_seen.append(await tokens.token())

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(ask)

    assert len(set(tokens_seen)) == 1
    assert tokens.acquisitions == 1
    assert emulator.stats()["token_requests"] == before + 1


async def test_refresh_replaces_a_rejected_token_once(emulator: Emulator) -> None:
    async with token_provider(emulator) as tokens:
        rejected = await tokens.token()
        fresh: list[str] = []

        async def refresh() -> None:
            fresh.append(await tokens.refresh(rejected))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(refresh)
        afterwards = await tokens.token()

    assert len(set(fresh)) == 1
    assert fresh[0] != rejected
    assert afterwards == fresh[0]
    assert tokens.acquisitions == 2
