"""Whole mailboxes through a real mount, byte for byte: generated at scale, and real mail.

The real-mail test runs over the public corpus of ``.eml`` files when it is present next to
the repository (``../shared/corpus``) or named by ``EXCHANGE_FUSE_CORPUS``.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.mount.truth import attachment_digests, sha256sum_tree
from tests.support.emulator import running_emulator

REPOSITORY = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("EXCHANGE_FUSE_CORPUS", REPOSITORY.parent / "shared" / "corpus"))
NOT_MAIL = {".json", ".md"}


def copy_and_compare(
    mountpoint: Path, emulator: object, mailbox: str, target: Path, *, inline: bool = False
) -> int:
    """cp -r the mount, then compare every folder with what Graph serves; files compared."""
    subprocess.run(["cp", "-r", str(mountpoint), str(target)], check=True)
    truth = attachment_digests(emulator, mailbox, inline=inline)
    compared = 0
    for folder, expected in truth.items():
        copied = sha256sum_tree(target / folder) if (target / folder).is_dir() else Counter()
        shortcuts = Counter(
            digest
            for digest, name in _digests(target / folder)
            if name.endswith(".url") and digest not in expected
        )
        assert copied - shortcuts == expected, folder
        compared += sum(expected.values())
    return compared


def _digests(directory: Path) -> list[tuple[str, str]]:
    import hashlib

    if not directory.is_dir():
        return []
    return [
        (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)
        for path in directory.iterdir()
        if path.is_file()
    ]


def test_a_generated_folder_of_more_than_a_thousand_messages(
    tmp_path: Path, mount: MountFactory
) -> None:
    mailbox = "bulk@example.com"
    spec = f"address={mailbox},folders=1,messages=1100,attachments=1-2,size=1k-3k,seed=5"
    with running_emulator(tmp_path / "emulator", f"--generate={spec}") as emulator:
        mounted = mount(emulator, mailbox)
        compared = copy_and_compare(mounted.mountpoint, emulator, mailbox, tmp_path / "copy")
        assert compared >= 1100


@pytest.mark.corpus
@pytest.mark.skipif(not CORPUS.is_dir(), reason="the public mail corpus is not next to the repo")
def test_every_message_of_the_corpus(tmp_path: Path, mount: MountFactory) -> None:
    # The emulator reads .eml files: link each message under that name, one folder a source.
    mail = tmp_path / "mail"
    messages = 0
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.suffix in NOT_MAIL:
            continue
        relative = path.relative_to(CORPUS)
        folder = mail / relative.parts[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("_".join(relative.parts[1:]) + ".eml")).symlink_to(path)
        messages += 1
    assert messages > 100

    mailbox = "corpus@example.com"
    with running_emulator(tmp_path / "emulator", f"--mailbox={mailbox}={mail}") as emulator:
        mounted = mount(emulator, mailbox, "--inline")
        copy = tmp_path / "copy"
        compared = copy_and_compare(mounted.mountpoint, emulator, mailbox, copy, inline=True)
        assert compared > 100

        for path in copy.rglob("*"):
            name = path.name
            assert 0 < len(name.encode()) <= 255 and len(name) <= 240, name
            assert not name.endswith((".", " ")), name
