"""The by-hand comparison: the ``O365`` package downloading every attachment of a folder.

O365 is installed only into a virtualenv of the benchmark's own, under the run's work
directory (or one given with ``--o365-venv``, reused when it already has O365), never into
the project's environment. ``o365_download.py`` runs there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.emulator import Emulator

from .rig import Options

log = logging.getLogger(__name__)

# The hooks the script relies on (Account.connection_constructor, the MSAL client property)
# exist from O365 2.1 on.
REQUIREMENT = "O365>=2.1,<3"
SCRIPT = Path(__file__).with_name("o365_download.py")


@dataclass(frozen=True, slots=True)
class O365Result:
    seconds: float
    messages: int
    files: int
    bytes: int
    version: str


def ensure_venv(options: Options) -> tuple[Path, str]:
    """A Python with O365 installed, and the O365 version."""
    venv = options.o365_venv or options.work / "o365-venv"
    python = venv / "bin" / "python"
    if not _has_o365(python):
        log.info("installing %s into %s", REQUIREMENT, venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             REQUIREMENT],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
    version = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('O365'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return python, version


def _has_o365(python: Path) -> bool:
    if not python.exists():
        return False
    found = subprocess.run([str(python), "-c", "import O365"], capture_output=True, check=False)
    return found.returncode == 0


def download_folder(
    options: Options,
    emulator: Emulator,
    mailbox: str,
    folder: str,
    destination: Path,
    requests_delay: int,
) -> O365Result:
    """Run the O365 script over ``Inbox/folder``; raises with its error output on failure."""
    python, version = ensure_venv(options)
    environment = {
        **os.environ,
        "O365_CLIENT_SECRET": emulator.client_secret,
        # requests lets these override any verify= setting, so they are the way to trust
        # the emulator's CA for requests, MSAL and O365 alike.
        "REQUESTS_CA_BUNDLE": emulator.ca_bundle,
        "CURL_CA_BUNDLE": emulator.ca_bundle,
        "SSL_CERT_FILE": emulator.ca_bundle,
    }
    result = subprocess.run(
        [
            str(python), str(SCRIPT),
            "--graph-url", emulator.graph_url,
            "--authority-url", emulator.authority_url,
            "--tenant", emulator.tenant_id,
            "--client-id", emulator.client_id,
            "--mailbox", mailbox,
            "--folder", folder,
            "--destination", str(destination),
            "--requests-delay", str(requests_delay),
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the O365 script failed: {result.stderr.strip()[-600:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return O365Result(
        float(data["seconds"]),
        int(data["messages"]),
        int(data["files"]),
        int(data["bytes"]),
        version,
    )
