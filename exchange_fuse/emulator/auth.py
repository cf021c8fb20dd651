"""The Entra ID side: OpenID discovery, the client-credentials token endpoint, bearer checks.

Errors follow Entra ID's shape (``error``, ``error_description`` with an AADSTS code,
``error_codes``, trace and correlation ids). Access tokens are JWTs carrying the
application's ``roles``, as Entra ID issues them for Graph (clients must still treat them as
opaque); the emulator remembers what it issued, so it can expire and revoke them.

An application without a Mail role (a delegated permission only, or no admin consent) gets
tokens all the same, and Graph answers 403 ``ErrorAccessDenied`` to every mail request, as
Exchange Online does.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exchange_fuse.emulator.errors import GraphError

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True, slots=True)
class Credentials:
    tenant_id: str
    client_id: str
    client_secret: str


@dataclass(slots=True)
class IssuedToken:
    client_id: str
    expires: float
    roles: tuple[str, ...] = ()


# Tokens older than this, or not yet valid by more than this, are refused (Entra ID allows
# a few minutes of clock difference in client assertions).
CLOCK_LEEWAY_S = 300


class TokenError(Exception):
    """A token endpoint failure, rendered the way Entra ID renders it."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def body(self) -> dict[str, object]:
        trace = str(uuid.uuid4())
        correlation = str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
        }


def load_certificate(path: Path) -> x509.Certificate:
    """The public certificate whose key must sign client assertions."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def _thumbprint(certificate: x509.Certificate, algorithm: str) -> str:
    der = certificate.public_bytes(serialization.Encoding.DER)
    digest = hashlib.new(algorithm, der).digest()
    return urlsafe_b64encode(digest).decode().rstrip("=")


class Authority:
    """Issues and checks tokens for the one application the emulator knows."""

    def __init__(
        self,
        credentials: Credentials,
        certificates: list[x509.Certificate],
        *,
        accepted_scopes: set[str],
        roles: tuple[str, ...] = ("Mail.ReadWrite",),
        clock_offset: float = 0.0,
    ) -> None:
        self.credentials = credentials
        self.certificates = certificates
        self.accepted_scopes = {scope.lower() for scope in accepted_scopes}
        self.roles = roles
        # Seconds this "server" clock runs ahead of the machine's, to stage clock skew.
        self.clock_offset = clock_offset
        self.tokens: dict[str, IssuedToken] = {}
        self._signing_key = secrets.token_bytes(32)

    def discovery(self, origin: str, tenant: str) -> dict[str, object]:
        self._check_tenant(tenant)
        base = f"{origin}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{origin}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{origin}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    def _check_tenant(self, tenant: str, error: str = "invalid_tenant") -> None:
        if tenant.lower() != self.credentials.tenant_id.lower():
            raise TokenError(
                400,
                error,
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )

    def issue(
        self, tenant: str, form: dict[str, str], token_endpoint: str, lifetime: int
    ) -> dict[str, object]:
        """Answer a token request, or raise ``TokenError``."""
        self._check_tenant(tenant, "invalid_request")
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise TokenError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id", "")
        if client_id.lower() != self.credentials.client_id.lower():
            raise TokenError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or scopes[0].lower() not in self.accepted_scopes:
            raise TokenError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {' '.join(scopes)} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        if "client_assertion" in form:
            self._check_assertion(form, token_endpoint)
        elif "client_secret" in form:
            if not secrets.compare_digest(form["client_secret"], self.credentials.client_secret):
                raise TokenError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    "request is the client secret value, not the client secret ID, for a "
                    f"secret added to app '{self.credentials.client_id}'.",
                )
        else:
            raise TokenError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )

        now = time.time()
        claims = {
            "aud": "https://graph.microsoft.com",
            "iss": f"https://sts.windows.net/{self.credentials.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
            "appid": self.credentials.client_id,
            "tid": self.credentials.tenant_id,
            "roles": list(self.roles),
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        self._forget_expired()
        self.tokens[token] = IssuedToken(self.credentials.client_id, now + lifetime, self.roles)
        log.debug("issued a token valid for %d s", lifetime)
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }

    def _check_assertion(self, form: dict[str, str], token_endpoint: str) -> None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenError(
                400,
                "invalid_request",
                50027,
                f"Invalid client_assertion_type; it must be '{ASSERTION_TYPE}'.",
            )
        assertion = form["client_assertion"]
        if not self.certificates:
            raise TokenError(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation: the application has no "
                "certificate credentials.",
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise TokenError(
                401, "invalid_client", 700027, "Client assertion is not a valid JWT."
            ) from None
        certificate = self._certificate_for(header)
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["RS256", "PS256"],
                audience=token_endpoint,
                # Times are checked below against this server's own clock.
                options={
                    "require": ["exp", "aud", "iss", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenError(
                401,
                "invalid_client",
                700021,
                f"Client assertion audience claim does not match Realm issuer '{token_endpoint}'.",
            ) from None
        except jwt.PyJWTError:
            raise TokenError(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            ) from None
        now = time.time() + self.clock_offset
        expires, not_before = float(claims["exp"]), float(claims.get("nbf", 0))
        if expires < now - CLOCK_LEEWAY_S or not_before > now + CLOCK_LEEWAY_S:
            raise TokenError(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            )
        client_id = self.credentials.client_id.lower()
        if str(claims.get("iss", "")).lower() != client_id or (
            str(claims.get("sub", "")).lower() != client_id
        ):
            raise TokenError(
                401,
                "invalid_client",
                700023,
                "Client assertion issuer and subject must be the client id of the application.",
            )

    def _certificate_for(self, header: dict[str, object]) -> x509.Certificate:
        # Thumbprints are base64url; some clients keep the "=" padding, some drop it.
        sha1 = str(header.get("x5t", "")).rstrip("=")
        sha256 = str(header.get("x5t#S256", "")).rstrip("=")
        for certificate in self.certificates:
            if sha1 and sha1 == _thumbprint(certificate, "sha1"):
                return certificate
            if sha256 and sha256 == _thumbprint(certificate, "sha256"):
                return certificate
        raise TokenError(
            401,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not "
            f"registered on application '{self.credentials.client_id}'.",
        )

    def _forget_expired(self) -> None:
        if len(self.tokens) < 1024:
            return
        now = time.time()
        for token, issued in list(self.tokens.items()):
            if issued.expires <= now:
                del self.tokens[token]

    def revoke_all(self) -> int:
        revoked = len(self.tokens)
        self.tokens.clear()
        return revoked

    def check(self, authorization: str | None, method: str = "GET") -> str:
        """The client id a Graph request acts for, or a 401 as Graph gives it."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("Access token is empty.")
        issued = self.tokens.get(authorization[7:].strip())
        if issued is None:
            raise _unauthorized("Invalid JWT token. The token is malformed or was revoked.")
        if issued.expires <= time.time():
            raise _unauthorized("Lifetime validation failed, the token is expired.")
        writes = method not in ("GET", "HEAD")
        allowed = (
            "Mail.ReadWrite" in issued.roles
            if writes
            else any(role.startswith("Mail.") for role in issued.roles)
        )
        if not allowed:
            raise GraphError(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )
        return issued.client_id


def _unauthorized(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
    )
