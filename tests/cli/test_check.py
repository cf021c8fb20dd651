"""``exchange-mount check`` against the emulator: the right sentence for each fault."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.emulator import Emulator, running_emulator

GOOD = "good@example.com"
DENIED = "denied@example.com"
ON_PREMISES = "onprem@example.com"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("emulator")
    (state / "good.json").write_text(
        json.dumps(
            {"messages": [{"subject": "S", "attachments": [{"name": "a.pdf", "content": "1"}]}]}
        )
    )
    (state / "empty.json").write_text("{}")
    return state


@pytest.fixture(scope="module")
def emulator(state: Path) -> Iterator[Emulator]:
    with running_emulator(
        state / "run",
        f"--mailbox={GOOD}={state / 'good.json'}",
        f"--mailbox={DENIED}={state / 'empty.json'}",
        f"--mailbox={ON_PREMISES}={state / 'empty.json'}",
        f"--deny={DENIED}",
        f"--disable={ON_PREMISES}",
    ) as running:
        yield running


def check(
    emulator: Emulator, tmp_path: Path, *extra: str, **overrides: str
) -> subprocess.CompletedProcess[str]:
    secret = tmp_path / "secret"
    secret.write_text(overrides.pop("secret", emulator.client_secret))
    values = {
        "tenant": emulator.tenant_id,
        "client-id": emulator.client_id,
        "graph-url": emulator.graph_url,
        "authority-url": emulator.authority_url,
        "ca-bundle": emulator.ca_bundle,
        **overrides,
    }
    arguments = [f"--{key}={value}" for key, value in values.items() if value]
    return subprocess.run(
        [sys.executable, "-m", "exchange_fuse", "check", *arguments,
         "--client-secret-file", str(secret), *extra],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert lines, result.stdout
    return lines[0]


def test_all_is_well(emulator: Emulator, tmp_path: Path) -> None:
    result = check(emulator, tmp_path, "--mailbox", GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"^ok    {GOOD}: \d+ folders$", result.stdout, re.MULTILINE)
    assert f"{GOOD}: downloaded 'a.pdf'" in result.stdout
    assert result.stdout.strip().endswith("all checks passed")


def test_wrong_secret(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(check(emulator, tmp_path, "--mailbox", GOOD, secret="nope"))
    assert "client secret is wrong" in line and "Value" in line


def test_wrong_tenant(emulator: Emulator, tmp_path: Path) -> None:
    origin = emulator.authority_url.rsplit("/", 1)[0]
    line = failure(
        check(emulator, tmp_path, "--mailbox", GOOD, tenant="other.example",
              **{"authority-url": f"{origin}/other.example"})
    )  # fmt: skip
    assert "tenant" in line


def test_wrong_client_id(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(
        check(emulator, tmp_path, "--mailbox", GOOD, **{"client-id": "1" * 8 + "-0000"})
    )
    assert "client id" in line


def test_access_policy(emulator: Emulator, tmp_path: Path) -> None:
    result = check(emulator, tmp_path, "--mailbox", GOOD, "--mailbox", DENIED)
    line = failure(result)
    assert DENIED in line and "access policy" in line
    assert f"{GOOD}: downloaded" in result.stdout  # the other mailbox is still checked


def test_mailbox_not_in_exchange_online(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(check(emulator, tmp_path, "--mailbox", ON_PREMISES))
    assert ON_PREMISES in line and "Exchange Online" in line


def test_unknown_mailbox(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(check(emulator, tmp_path, "--mailbox", "nobody@example.com"))
    assert "nobody@example.com" in line and "check the address" in line


def test_tls_interception(emulator: Emulator, tmp_path: Path) -> None:
    # A CA the machine does not know stands in for a TLS-inspecting proxy.
    other_ca = trustme.CA()
    bundle = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(bundle))
    line = failure(check(emulator, tmp_path, "--mailbox", GOOD, **{"ca-bundle": str(bundle)}))
    assert "TLS" in line and "ca_bundle" in line


def test_bad_configuration(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(check(emulator, tmp_path, "--mailbox", GOOD, "--poll-interval", "soon"))
    assert "--poll-interval" in line


def test_no_application_permission(state: Path, tmp_path: Path) -> None:
    """A delegated permission only, or no admin consent: the token has no Mail role."""
    with running_emulator(
        tmp_path / "run", f"--mailbox={GOOD}={state / 'good.json'}", "--app-roles="
    ) as emulator:
        line = failure(check(emulator, tmp_path, "--mailbox", GOOD))
    assert "no Mail application permission" in line and "admin consent" in line
    assert "delegated" in line


def test_read_permission_only_is_enough_for_a_read_only_mount(state: Path, tmp_path: Path) -> None:
    with running_emulator(
        tmp_path / "run", f"--mailbox={GOOD}={state / 'good.json'}", "--app-roles=Mail.Read"
    ) as emulator:
        line = failure(check(emulator, tmp_path, "--mailbox", GOOD))
        assert "Mail.ReadWrite" in line and "read_only" in line
        result = check(emulator, tmp_path, "--mailbox", GOOD, "--read-only")
        assert result.returncode == 0, result.stdout


def test_clock_skew_with_a_certificate(state: Path, tmp_path: Path) -> None:
    authority = trustme.CA(key_type=trustme.KeyType.RSA)
    issued = authority.issue_cert("exchange-fuse.example", key_type=trustme.KeyType.RSA)
    credential = tmp_path / "app.pem"
    credential.write_bytes(issued.private_key_pem.bytes() + issued.cert_chain_pems[0].bytes())
    public = tmp_path / "public.pem"
    public.write_bytes(issued.cert_chain_pems[0].bytes())
    with running_emulator(
        tmp_path / "run", f"--mailbox={GOOD}={state / 'good.json'}", f"--cert={public}",
        "--clock-offset=3600",
    ) as emulator:  # fmt: skip
        arguments = [
            f"--tenant={emulator.tenant_id}", f"--client-id={emulator.client_id}",
            f"--graph-url={emulator.graph_url}", f"--authority-url={emulator.authority_url}",
            f"--ca-bundle={emulator.ca_bundle}", f"--certificate-file={credential}",
            f"--mailbox={GOOD}",
        ]  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "exchange_fuse", "check", *arguments],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    line = failure(result)
    assert "clock" in line


def test_move_destination_and_mountpoint_are_checked(emulator: Emulator, tmp_path: Path) -> None:
    line = failure(check(emulator, tmp_path, "--mailbox", GOOD, "--on-empty-message", "move:Nope"))
    assert "'Nope'" in line and GOOD in line
    result = check(emulator, tmp_path, "--mailbox", GOOD, "--on-empty-message", "move:Inbox")
    assert result.returncode == 0, result.stdout

    missing = tmp_path / "no-such-mountpoint"
    config = tmp_path / "mount.toml"
    config.write_text(f'mountpoint = "{missing}"\n')
    line = failure(check(emulator, tmp_path, "--mailbox", GOOD, "--config", str(config)))
    assert str(missing) in line and "does not exist" in line
