"""Application tokens for Microsoft Graph: OAuth2 client credentials through MSAL.

The mount signs in as an Entra ID application (a client secret or a certificate) and
gets app-only tokens for ``<graph>/.default``. MSAL does the protocol and keeps the token
cache; this module runs MSAL off the trio event loop, makes sure only one acquisition is
ever in progress, and turns the identity platform's refusals into an :class:`AuthError`
that says in plain words what to fix.

MSAL talks HTTP through an ``httpx.Client`` given the TLS settings explicitly: ``requests``
(MSAL's default) lets ``REQUESTS_CA_BUNDLE`` from the environment override ``verify``, which
breaks a private CA such as the emulator's and many corporate proxies.

Errors::

    AuthError                  the identity platform refused the credentials (not retried)
     └── AuthUnavailableError  the token endpoint could not be reached or failed (transient)
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msal
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

log = logging.getLogger(__name__)

# Authority hosts MSAL knows; any other host (an emulator, a proxy) needs
# instance_discovery=False, or MSAL asks login.microsoftonline.com about it first.
_MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.chinacloudapi.cn",
    }
)

# A token is used until this long before it expires (capped at a tenth of its lifetime),
# so a request never leaves with a token that dies on the way.
_EXPIRY_MARGIN_S = 120.0

# AADSTS codes a user can act on, with what to do about them.
_HINTS_BY_CODE: dict[int, str] = {
    7000215: (
        "the client secret is wrong: use the secret's Value (not its Secret ID) from the "
        "app registration's 'Certificates & secrets' page"
    ),
    7000222: "the client secret has expired: create a new one in the app registration",
    700016: (
        "no application with this client id exists in the tenant: check the client "
        "(application) id and the tenant id, and that the app has not been deleted"
    ),
    90002: "the tenant was not found: check the tenant id or domain name",
    900023: "the tenant id is not valid: use the directory (tenant) GUID or a domain name",
    700027: (
        "the certificate was not accepted: upload its public part to the app registration "
        "and check the thumbprint"
    ),
    700024: "the signed assertion is outside its valid time: check this machine's clock",
    70011: "the scope is not valid: it must be the Graph root followed by /.default",
    500011: (
        "Microsoft Graph is not known in this tenant: check that the Graph and authority "
        "URLs belong to the same cloud"
    ),
    7000112: "the application is disabled in this tenant",
    65001: "the application has no admin consent in this tenant: grant admin consent",
    53003: "a conditional access policy blocked the sign-in",
}

_HINTS_BY_ERROR: dict[str, str] = {
    "invalid_client": (
        "the client credentials were refused: check the client secret or certificate"
    ),
    "unauthorized_client": (
        "the application is not allowed to sign in to this tenant: check the client id "
        "and that the app is registered there"
    ),
    "invalid_scope": "the scope is not valid: it must be the Graph root followed by /.default",
    "invalid_tenant": (
        "the authority did not recognise the tenant: check the tenant id (or domain) and "
        "the authority URL"
    ),
    "invalid_authority": "the authority URL must be https:// and name a host",
}


class AuthError(Exception):
    """The identity platform refused to issue a token.

    Attributes:
        error: the OAuth2 error, e.g. ``invalid_client``.
        codes: the AADSTS error codes the platform gave, if any.
        hint: one plain sentence saying what to fix.
        description: the platform's own description (never holds the secret).
    """

    def __init__(
        self, error: str, *, codes: tuple[int, ...] = (), hint: str, description: str = ""
    ) -> None:
        super().__init__(f"{error}: {hint}")
        self.error = error
        self.codes = codes
        self.hint = hint
        self.description = description


class AuthUnavailableError(AuthError):
    """The token endpoint could not be reached or failed; trying later may work."""


@dataclass(frozen=True)
class ClientSecret:
    """A client secret (the secret's Value from the app registration)."""

    secret: str = field(repr=False)


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate credential: the private key (PEM) and how to name the certificate.

    Entra ID finds the certificate by its SHA-1 thumbprint; it is computed from
    ``certificate_pem`` when not given.
    """

    private_key_pem: str = field(repr=False)
    thumbprint: str | None = None
    certificate_pem: str | None = None
    passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_pem_file(cls, path: str | Path, passphrase: str | None = None) -> ClientCertificate:
        """Read a PEM file holding the private key and the certificate."""
        blocks = _pem_blocks(Path(path).read_text(encoding="ascii"))
        keys = [block for kind, block in blocks if kind.endswith("PRIVATE KEY")]
        certificates = [block for kind, block in blocks if kind == "CERTIFICATE"]
        if not keys or not certificates:
            raise ValueError(f"{path}: expected a private key and a certificate in PEM form")
        _require_rsa(
            serialization.load_pem_private_key(
                keys[0].encode(), passphrase.encode() if passphrase else None
            )
        )
        return cls(
            private_key_pem=keys[0],
            thumbprint=_thumbprint(certificates[0]),
            certificate_pem=certificates[0],
            passphrase=passphrase,
        )

    @classmethod
    def from_pfx(cls, path: str | Path, passphrase: str | None = None) -> ClientCertificate:
        """Read a PKCS#12 (.pfx/.p12) file holding the private key and the certificate."""
        password = passphrase.encode() if passphrase else None
        key, certificate, _ = pkcs12.load_key_and_certificates(Path(path).read_bytes(), password)
        if key is None or certificate is None:
            raise ValueError(f"{path}: expected a private key and a certificate")
        _require_rsa(key)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return cls(
            private_key_pem=key_pem,
            thumbprint=_thumbprint(certificate_pem),
            certificate_pem=certificate_pem,
        )

    def as_msal_credential(self) -> dict[str, str]:
        """The dict form MSAL's ``client_credential`` takes."""
        thumbprint = self.thumbprint
        if thumbprint is None and self.certificate_pem is not None:
            thumbprint = _thumbprint(self.certificate_pem)
        if thumbprint is None:
            raise ValueError("a certificate credential needs a thumbprint or the certificate")
        credential = {"private_key": self.private_key_pem, "thumbprint": thumbprint}
        if self.certificate_pem is not None:
            credential["public_certificate"] = self.certificate_pem
        if self.passphrase is not None:
            credential["passphrase"] = self.passphrase
        return credential


def _require_rsa(key: object) -> None:
    # Entra ID takes RS256 and PS256 client assertions only, so only RSA keys sign in.
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the private key must be an RSA key (Entra ID accepts no other kind)")


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """TLS settings for Graph and the authority: a CA bundle, or the system's trust store."""
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


class _MsalHttpClient(httpx.Client):
    """httpx as MSAL's ``http_client``.

    MSAL hands certificate assertions over as bytes, which ``requests`` sends as they are
    but httpx would send as the text ``b'...'``; they are decoded here.
    """

    def post(self, url: Any, *args: Any, data: Any = None, **kwargs: Any) -> httpx.Response:
        if isinstance(data, dict):
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        return super().post(url, *args, data=data, **kwargs)


class TokenProvider:
    """Hands out app-only access tokens for Graph, fetching new ones as they expire.

    NB: every MSAL call runs in a worker thread under ``_acquiring``, so tokens are never
    fetched twice at once, whatever the number of tasks asking. A task that stops waiting
    (its FUSE request timed out) leaves the thread to finish on its own: the token it
    brings is kept for the next caller, and a stalled identity platform never holds a
    request past its deadline.
    """

    def __init__(
        self,
        *,
        authority_url: str,
        tenant_id: str,
        client_id: str,
        credential: ClientSecret | ClientCertificate,
        scope: str,
        ca_bundle: str | None = None,
        proxy: str | None = None,
        timeout: float = 30,
    ) -> None:
        self._authority = _authority(authority_url, tenant_id)
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._credential = credential
        self._scopes = [scope]
        self._http = _MsalHttpClient(verify=ssl_context(ca_bundle), proxy=proxy, timeout=timeout)
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = trio.Lock()
        # Held by the worker thread for the whole MSAL call, which may outlive its caller.
        self._acquiring = threading.Lock()
        self._token: str | None = None
        self._usable_until = 0.0  # time.monotonic() value
        self.acquisitions = 0  # tokens fetched from the identity platform

    def __repr__(self) -> str:
        return f"TokenProvider(authority={self._authority!r}, client_id={self._client_id!r})"

    async def token(self) -> str:
        """A valid access token, from memory when it has time left."""
        if self._token is not None and time.monotonic() < self._usable_until:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._usable_until:
                return self._token
            return await trio.to_thread.run_sync(self._acquire, abandon_on_cancel=True)

    async def refresh(self, rejected_token: str) -> str:
        """A new token after Graph rejected ``rejected_token`` (expired or revoked)."""
        async with self._lock:
            if self._token is not None and self._token != rejected_token:
                return self._token  # another task already replaced it
            self._token = None
            log.info("access token rejected by graph, fetching a new one")
            return await trio.to_thread.run_sync(
                self._acquire, rejected_token, abandon_on_cancel=True
            )

    async def aclose(self) -> None:
        """Close the HTTP connections to the authority."""
        await trio.to_thread.run_sync(self._http.close)

    async def __aenter__(self) -> TokenProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _acquire(self, rejected_token: str | None = None) -> str:
        """Get a token from MSAL (its cache or the identity platform). Runs in a thread."""
        with self._acquiring:
            # An abandoned acquisition may have finished while this thread waited.
            token = self._token
            if (
                token is not None
                and token != rejected_token
                and time.monotonic() < self._usable_until
            ):
                return token
            return self._acquire_now(rejected_token)

    def _acquire_now(self, rejected_token: str | None) -> str:
        app = self._application()
        if rejected_token is not None:
            _forget(app.token_cache, rejected_token)

        try:
            result = app.acquire_token_for_client(scopes=self._scopes)
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from None
        except ValueError as exc:
            # MSAL raises ValueError when the endpoint answers something that is not JSON.
            raise AuthUnavailableError(
                "invalid_response",
                hint="the token endpoint gave an answer that is not a token response",
                description=type(exc).__name__,
            ) from None

        if "access_token" not in result:
            raise _refusal(result)

        token = str(result["access_token"])
        lifetime = _lifetime(result.get("expires_in"))
        self._token = token
        self._usable_until = time.monotonic() + lifetime - min(_EXPIRY_MARGIN_S, lifetime / 10)
        if result.get("token_source") == "identity_provider":
            self.acquisitions += 1
            log.debug("fetched an access token valid for %ds", lifetime)
        return token

    def _application(self) -> msal.ConfidentialClientApplication:
        """The MSAL application, built on first use (building it reads the OpenID document)."""
        if self._app is not None:
            return self._app

        parts = urlsplit(self._authority)
        if parts.scheme != "https" or not parts.hostname:
            raise AuthError("invalid_authority", hint=_HINTS_BY_ERROR["invalid_authority"])
        if isinstance(self._credential, ClientSecret):
            client_credential: str | dict[str, str] = self._credential.secret
        else:
            client_credential = self._credential.as_msal_credential()
        microsoft_host = parts.hostname.lower() in _MICROSOFT_AUTHORITY_HOSTS

        try:
            self._app = msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=client_credential,
                authority=self._authority,
                http_client=self._http,
                instance_discovery=None if microsoft_host else False,
            )
        except httpx.HTTPError as exc:
            raise _unavailable(exc) from None
        except ValueError:
            # MSAL reports an authority that answers 4xx to OpenID discovery (an unknown
            # tenant) as ValueError.
            raise AuthError(
                "invalid_tenant",
                hint=f"{_HINTS_BY_ERROR['invalid_tenant']} ({self._tenant_id!r})",
            ) from None
        return self._app


def _authority(authority_url: str, tenant_id: str) -> str:
    """The tenant's authority: the authority host's URL followed by the tenant.

    A URL that already ends with the tenant (as an emulator may give it) is kept as is.
    """
    base = authority_url.rstrip("/")
    if base.rsplit("/", 1)[-1].casefold() == tenant_id.casefold():
        return base
    return f"{base}/{tenant_id}"


def _forget(cache: msal.TokenCache, token: str) -> None:
    """Drop ``token`` from MSAL's cache so the next acquisition fetches a new one."""
    access_token = msal.TokenCache.CredentialType.ACCESS_TOKEN
    for entry in list(cache.search(access_token)):
        if entry.get("secret") == token:
            cache.remove_at(entry)


def _lifetime(expires_in: object) -> float:
    """Seconds a token lives, from ``expires_in`` (MSAL's own default when absent)."""
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        return max(float(expires_in), 0.0)
    if isinstance(expires_in, str) and expires_in.isdigit():
        return float(expires_in)
    return 600.0


def _refusal(result: dict[str, Any]) -> AuthError:
    """Turn MSAL's error dict into an AuthError with a hint a person can act on."""
    error = str(result.get("error") or "unknown_error")
    raw_codes = result.get("error_codes")
    if not isinstance(raw_codes, list):
        raw_codes = []
    codes = tuple(code for code in raw_codes if isinstance(code, int))
    description = str(result.get("error_description") or "").splitlines()
    first_line = description[0] if description else ""

    hint = next((_HINTS_BY_CODE[code] for code in codes if code in _HINTS_BY_CODE), None)
    if hint is None:
        hint = _HINTS_BY_ERROR.get(error, "the identity platform refused to issue a token")
    log.debug("token request refused: %s %s", error, codes)
    return AuthError(error, codes=codes, hint=hint, description=first_line)


def _unavailable(exc: httpx.HTTPError) -> AuthError:
    if _untrusted_certificate(exc):
        # Not transient: retrying cannot help until the CA is configured.
        return AuthError(
            "untrusted_certificate",
            hint="the sign-in server's TLS certificate is not trusted; if a proxy or firewall "
            "inspects TLS, give its CA certificate with ca_bundle",
        )
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return AuthUnavailableError(
            "temporarily_unavailable",
            hint=f"the token endpoint failed with HTTP {status}; it will be tried again",
        )
    return AuthUnavailableError(
        "unreachable",
        hint=f"the token endpoint could not be reached ({type(exc).__name__})",
    )


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _pem_blocks(text: str) -> list[tuple[str, str]]:
    """Split PEM text into (kind, block) pairs, e.g. ("PRIVATE KEY", "-----BEGIN ...")."""
    blocks = []
    for part in text.split("-----BEGIN ")[1:]:
        kind, _, rest = part.partition("-----")
        end_marker = f"-----END {kind}-----"
        body, found, _ = rest.partition(end_marker)
        if found:
            blocks.append((kind, f"-----BEGIN {kind}-----{body}{end_marker}\n"))
    return blocks


def _thumbprint(certificate_pem: str) -> str:
    """The certificate's SHA-1 thumbprint in hex, the way Entra ID shows it."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
