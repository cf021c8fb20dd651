"""What a mount should show, read straight from the emulator through Graph.

Used to check a mount byte for byte against the source: for every folder, the SHA-256 of
each attachment's ``$value`` as a plain Graph client downloads it.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.emulator import enc


def folder_paths(emulator: Any, mailbox: str) -> dict[str, str]:
    """Folder id -> path of display names ("Inbox/Invoices"), for every folder."""
    folders = emulator.list_folders(mailbox)
    by_id = {folder["id"]: folder for folder in folders}
    paths: dict[str, str] = {}

    def path_of(folder: dict[str, Any]) -> str:
        parent = by_id.get(folder.get("parentFolderId"))
        name = folder["displayName"]
        return f"{path_of(parent)}/{name}" if parent else name

    for folder in folders:
        paths[folder["id"]] = path_of(folder)
    return paths


def attachment_digests(
    emulator: Any, mailbox: str, *, inline: bool = False
) -> dict[str, Counter[str]]:
    """Folder path -> the SHA-256 digests of its file and item attachments' content."""
    digests: dict[str, Counter[str]] = {}
    with emulator.client() as client:
        for folder_id, path in folder_paths(emulator, mailbox).items():
            counter: Counter[str] = Counter()
            for message in emulator.list_messages(mailbox, folder_id):
                for attachment in message.get("attachments", []):
                    kind = attachment.get("@odata.type", "")
                    if "referenceAttachment" in kind or (attachment["isInline"] and not inline):
                        continue
                    url = (
                        f"/users/{enc(mailbox)}/messages/{enc(message['id'])}"
                        f"/attachments/{enc(attachment['id'])}/$value"
                    )
                    response = client.get(url)
                    response.raise_for_status()
                    counter[hashlib.sha256(response.content).hexdigest()] += 1
            digests[path] = counter
    return digests


def sha256sum_tree(directory: Path) -> Counter[str]:
    """Digests of the regular files directly in directory, computed by the real sha256sum."""
    files = sorted(path for path in directory.iterdir() if path.is_file())
    if not files:
        return Counter()
    output = subprocess.run(
        ["sha256sum", "--", *map(str, files)], check=True, capture_output=True, text=True
    ).stdout
    return Counter(line.split()[0] for line in output.splitlines())
