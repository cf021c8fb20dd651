"""Plain sentences for what went wrong, each naming the fix, for start-up and ``check``."""

from __future__ import annotations

import jwt

from . import auth, graph


def explain(exc: BaseException, mailbox: str | None = None) -> str:
    """One sentence for a failure, saying what to fix."""
    where = f"mailbox {mailbox}" if mailbox else "Graph"
    match exc:
        case auth.AuthError():
            return f"sign-in failed: {exc.hint}"
        case graph.CertificateError():
            return (
                f"{where}: the server's TLS certificate is not trusted; if a proxy or firewall "
                "inspects TLS, give its CA certificate with ca_bundle"
            )
        case graph.AccessDeniedError():
            return f"{where}: access denied ({exc.code}): {exc.hint}"
        case graph.MailboxUnavailableError():
            return f"{where}: not reachable ({exc.code}): {exc.hint}"
        case graph.NotFoundError():
            return f"{where}: not found ({exc.code}); check the address"
        case graph.GraphError():
            return f"{where}: Graph answered {exc.status} {exc.code or ''}: {exc.message}"
        case _:
            return f"{where}: {exc}"


def explain_policy_denial(mailbox: str) -> str:
    """Access denied although the app holds a Mail permission: an access policy."""
    return (
        f"mailbox {mailbox}: an Exchange application access policy keeps this app out "
        "(ErrorAccessDenied): add the mailbox to the policy's security group or change the "
        "policy (New-ApplicationAccessPolicy); changes can take an hour to apply"
    )


def token_roles(token: str) -> list[str] | None:
    """The application roles an access token carries, or None when it cannot be read.

    Graph tokens are JWTs today but are documented as opaque; this is diagnosis only, so
    an unreadable token just means the roles cannot be shown.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    roles = claims.get("roles")
    return [str(role) for role in roles] if isinstance(roles, list) else []
