"""A certificate authority and a server certificate for 127.0.0.1, made at each start."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def make_certificates(state_dir: Path) -> tuple[Path, Path, Path]:
    """Write ``ca.pem`` (what clients trust), ``server.pem`` and ``server-key.pem``."""
    authority = trustme.CA(organization_name="exchange-fuse Graph emulator")
    server = authority.issue_cert("127.0.0.1", "localhost", "::1")
    ca_path = state_dir / "ca.pem"
    cert_path = state_dir / "server.pem"
    key_path = state_dir / "server-key.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    server.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def client_context(ca_path: Path) -> ssl.SSLContext:
    """An SSL context that trusts the emulator's CA (for clients in tests)."""
    return ssl.create_default_context(cafile=str(ca_path))
