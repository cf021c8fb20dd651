"""Tokens through real MSAL: discovery, secrets, certificates, expiry and revocation."""

from __future__ import annotations

import datetime
import hashlib
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.emulator.conftest import DEMO
from tests.support.emulator import GRAPH_SCOPE, Emulator, running_emulator


def test_msal_gets_a_token_and_serves_it_from_its_cache(demo: Emulator) -> None:
    app = demo.msal_app()
    first = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    second = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert first["token_type"] == "Bearer"
    # One hour by default; MSAL treats a token with 300 s or less left as expired.
    assert first["expires_in"] == 3600
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert second["access_token"] == first["access_token"]


def test_token_lifetime_changes_at_run_time(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(token_lifetime_s=900)
    result = fresh_demo.msal_app().acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result["expires_in"] == 900


def test_the_graph_origin_is_accepted_as_scope(demo: Emulator) -> None:
    origin = demo.graph_url.rsplit("/v1.0", 1)[0]
    result = demo.msal_app().acquire_token_for_client(scopes=[f"{origin}/.default"])
    assert "access_token" in result


def test_wrong_secret_is_invalid_client(demo: Emulator) -> None:
    result = demo.msal_app("not-the-secret").acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215:")


def test_unknown_client_and_bad_scope_are_refused(demo: Emulator) -> None:
    token_url = f"{demo.authority_url}/oauth2/v2.0/token"
    with httpx.Client(verify=demo.ssl_context()) as http:
        unknown = http.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": "00000000-0000-0000-0000-000000000000",
                "client_secret": demo.client_secret,
                "scope": GRAPH_SCOPE,
            },
        )
        scope = http.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": demo.client_id,
                "client_secret": demo.client_secret,
                "scope": "https://graph.microsoft.com/Mail.Read",
            },
        )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unauthorized_client"
    assert unknown.json()["error_codes"] == [700016]
    assert scope.status_code == 400
    assert scope.json()["error"] == "invalid_scope"


def test_unknown_tenant_fails_discovery(demo: Emulator) -> None:
    origin = demo.graph_url.rsplit("/v1.0", 1)[0]
    with httpx.Client(verify=demo.ssl_context()) as http:
        response = http.get(f"{origin}/no-such-tenant/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_graph_refuses_missing_and_unknown_tokens(demo: Emulator) -> None:
    with httpx.Client(base_url=demo.graph_url, verify=demo.ssl_context()) as http:
        missing = http.get(f"/users/{DEMO}/mailFolders")
        forged = http.get(f"/users/{DEMO}/mailFolders", headers={"Authorization": "Bearer forged"})
    for response in (missing, forged):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert "request-id" in response.json()["error"]["innerError"]


def test_revoked_tokens_stop_working(fresh_demo: Emulator) -> None:
    with fresh_demo.client() as client:
        assert client.get(f"/users/{DEMO}/mailFolders").status_code == 200
        fresh_demo.revoke_tokens()
        response = client.get(f"/users/{DEMO}/mailFolders")
    assert response.status_code == 401
    # A new token works again.
    with fresh_demo.client() as client:
        assert client.get(f"/users/{DEMO}/mailFolders").status_code == 200


def test_tokens_expire_after_their_lifetime(tmp_path: Path) -> None:
    with running_emulator(tmp_path, "--demo", "--token-lifetime", "1") as emulator:
        result = emulator.msal_app().acquire_token_for_client(scopes=[GRAPH_SCOPE])
        assert result["expires_in"] == 1
        headers = {"Authorization": f"Bearer {result['access_token']}"}
        with httpx.Client(base_url=emulator.graph_url, verify=emulator.ssl_context()) as http:
            assert http.get(f"/users/{DEMO}/mailFolders", headers=headers).status_code == 200
            time.sleep(1.2)
            expired = http.get(f"/users/{DEMO}/mailFolders", headers=headers)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"


def _certificate(path: Path) -> tuple[bytes, str]:
    """A self-signed certificate written to ``path``: its private key and SHA-1 thumbprint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exchange-fuse test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    der = certificate.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, hashlib.sha1(der).hexdigest()


def test_certificate_assertions_are_checked(tmp_path: Path) -> None:
    cert_path = tmp_path / "app.pem"
    key_pem, thumbprint = _certificate(cert_path)
    other_key, _ = _certificate(tmp_path / "unregistered.pem")
    with running_emulator(tmp_path / "state", "--demo", "--cert", str(cert_path)) as emulator:
        good = emulator.msal_app(
            {"private_key": key_pem.decode(), "thumbprint": thumbprint}
        ).acquire_token_for_client(scopes=[GRAPH_SCOPE])
        # Signed by a key whose certificate the application does not have.
        bad = emulator.msal_app(
            {"private_key": other_key.decode(), "thumbprint": thumbprint}
        ).acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in good
    assert bad["error"] == "invalid_client"
    assert bad["error_codes"] == [700027]
