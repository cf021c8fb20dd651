"""Every message of the shared MIME corpus loads, and its attachments are served byte-exact.

The corpus (real-world and parser test-suite mail) lives beside the repository and may be
absent; the project's own MIME cases are in test_mime.py.
"""

from __future__ import annotations

import email
import email.policy
import shutil
from collections import Counter
from email.message import Message
from pathlib import Path

import pytest

from tests.support.emulator import enc, running_emulator

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
ADDRESS = "corpus@example.com"

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}"),
]


def _messages() -> list[Path]:
    return sorted(
        path
        for path in CORPUS.rglob("*")
        if path.is_file() and path.suffix.lower() not in (".json", ".md")
    )


MAIL_TYPES = ("message/rfc822", "message/global", "message/news")


def _leaves(part: Message, inside_alternative: bool = False) -> list[tuple[Message, bool]]:
    """Leaf parts outside attached mails, with whether they sit in an alternative.

    A ``message/*`` part that is not an attached mail (a delivery report, say) is a leaf.
    """
    ctype = part.get_content_type()
    if ctype in MAIL_TYPES:
        return []
    if part.is_multipart() and not ctype.startswith("message/"):
        children = part.get_payload()
        alternative = ctype == "multipart/alternative"
        found = []
        for child in children if isinstance(children, list) else []:
            found.extend(_leaves(child, inside_alternative or alternative))
        return found
    return [(part, inside_alternative)]


def _payload(part: Message) -> bytes:
    """What the email package gives as the content of a leaf part."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    # message/* leaves: the text after the part's own headers.
    whole = part.as_bytes()
    for separator in (b"\r\n\r\n", b"\n\n"):
        _head, found, body = whole.partition(separator)
        if found:
            return body
    return b""


def test_corpus_attachments_match_the_email_package(tmp_path: Path) -> None:
    files = _messages()
    source = tmp_path / "mail"
    for number, path in enumerate(files):
        folder = source / f"{number:04d}"
        folder.mkdir(parents=True)
        shutil.copyfile(path, folder / "message.eml")

    with running_emulator(tmp_path / "state", "--mailbox", f"{ADDRESS}={source}") as emulator:
        folders = {f["displayName"]: f for f in emulator.list_folders(ADDRESS)}
        failures = []
        with emulator.client() as client:
            for number, path in enumerate(files):
                folder = folders[f"{number:04d}"]
                assert folder["totalItemCount"] == 1, path
                listing = client.get(
                    f"/users/{ADDRESS}/mailFolders/{enc(folder['id'])}/messages",
                    params={"$expand": "attachments($select=id,name,contentType,size,isInline)"},
                )
                assert listing.status_code == 200, (path, listing.text)
                message = listing.json()["value"][0]
                served: dict[str, list[bytes]] = {"file": [], "item": []}
                for attachment in message["attachments"]:
                    url = (
                        f"/users/{ADDRESS}/messages/{enc(message['id'])}"
                        f"/attachments/{enc(attachment['id'])}/$value"
                    )
                    value = client.get(url)
                    assert value.status_code == 200, (path, attachment["name"])
                    assert int(value.headers["content-length"]) == len(value.content)
                    kind = attachment["@odata.type"].rsplit(".", 1)[-1]
                    served["item" if kind == "itemAttachment" else "file"].append(value.content)
                problem = _compare(path, served)
                if problem:
                    failures.append(problem)

    assert not failures, "\n".join(failures)


def _compare(path: Path, served: dict[str, list[bytes]]) -> str | None:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
    leaves = _leaves(parsed)
    payloads = Counter(_payload(part) for part, _ in leaves)
    # Parts any mail program shows as attachments must all be there.
    required = Counter(
        _payload(part)
        for part, in_alternative in leaves
        if not in_alternative
        and (
            part.get_filename() is not None
            or (part.get("Content-Disposition", "").split(";")[0].strip().lower() == "attachment")
        )
    )
    got = Counter(served["file"])
    if got - payloads:
        return f"{path}: served {sum((got - payloads).values())} attachment(s) not in the MIME"
    if required - got:
        return f"{path}: {sum((required - got).values())} attachment(s) missing"
    attached = [part for part in parsed.walk() if part.get_content_type() in MAIL_TYPES]
    if len(served["item"]) > len(attached):
        return f"{path}: more attached mails served than the MIME holds"
    for item in served["item"]:
        if not isinstance(email.message_from_bytes(item), Message):
            return f"{path}: an attached mail is not MIME"
    return None
