"""Answers Graph should never give, seen through a real mount: an errno and a log line each.

The mount reads the emulator through ``TamperingProxy``, which spoils chosen answers:
malformed JSON, a listing of the wrong shape, items with missing or odd fields, an unknown
attachment type, a download shorter than it claims. Huge names come from the mailbox itself,
and attachments vanish on the server between ``ls`` and ``cat``. Whatever comes, the daemon
answers with an errno or serves what it can, says so in its log, and stays up.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.mount.conftest import MountFactory
from tests.mount.faults import folder_id, timed, wait_until
from tests.mount.tamper import TamperingProxy, json_rule, short_body_rule
from tests.support.emulator import Emulator, enc, running_emulator
from tests.support.mount import MountProcess

MAILBOX = "intake@example.com"
HUGE_SUBJECT = "Überweisungsbestätigung " * 125  # 3,000 characters
HUGE_ATTACHMENT = "ñ" * 2000 + ".pdf"
EMOJI_SUBJECT = "\N{PAPERCLIP}" * 300  # 4 bytes each in UTF-8
SHORT_CONTENT_SIZE = 40 * 1024
QUICK = ("--retry-attempts", "3", "--retry-backoff", "0.05", "--request-timeout", "3")


def message(subject: str, *attachments: tuple[str, str]) -> dict[str, Any]:
    return {
        "subject": subject,
        "received": "2024-06-03T09:00:00Z",
        "attachments": [{"name": name, "content": content} for name, content in attachments],
    }


MAILBOX_DESCRIPTION = {
    "folders": [
        {"name": "Broken", "messages": [message("Fine", ("a.txt", "a"))]},
        {"name": "Shapeless", "messages": [message("Fine", ("b.txt", "b"))]},
        {
            "name": "Odd",
            "messages": [
                message("No id", ("lost.txt", "lost")),
                message(
                    "Plain",
                    ("kept.txt", "kept"),
                    ("nameless.txt", "nameless"),
                    ("noid.txt", "no id"),
                    ("mystery.dat", "mystery"),
                    ("wrongsize.txt", "wrong size"),
                ),
                message("Garbled", ("x.txt", "garbled")),
            ],
        },
        {
            "name": "Huge",
            "messages": [
                message(HUGE_SUBJECT, (HUGE_ATTACHMENT, "huge")),
                message(EMOJI_SUBJECT, ("report.pdf", "emoji")),
            ],
        },
        {
            "name": "Vanishing",
            "messages": [
                message("Going", ("soon.txt", "soon"), ("stays.txt", "stays")),
                message("Whole", ("gone.txt", "gone")),
            ],
        },
        {
            "name": "Liar",
            "messages": [
                {
                    "subject": "Short",
                    "received": "2024-06-03T09:00:00Z",
                    "attachments": [{"name": "short.bin", "size": SHORT_CONTENT_SIZE, "seed": 5}],
                }
            ],
        },
    ]
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state = tmp_path_factory.mktemp("emulator")
    description = state / "intake.json"
    description.write_text(json.dumps(MAILBOX_DESCRIPTION))
    with running_emulator(state, f"--mailbox={MAILBOX}={description}") as running:
        yield running


@pytest.fixture(scope="module")
def module_proxy(
    emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TamperingProxy]:
    with TamperingProxy(emulator, tmp_path_factory.mktemp("proxy")) as running:
        yield running


@pytest.fixture
def proxy(module_proxy: TamperingProxy) -> Iterator[TamperingProxy]:
    yield module_proxy
    module_proxy.rules.clear()


def listing_of(emulator: Emulator, folder: str) -> str:
    """The decoded path that lists a folder's messages."""
    return f"/mailFolders/{folder_id(emulator, MAILBOX, folder)}/messages"


def mount_through(
    proxy: TamperingProxy, emulator: Emulator, mount: MountFactory, *options: str
) -> MountProcess:
    return mount(
        emulator,
        MAILBOX,
        *("--graph-url", proxy.graph_url, "--authority-url", proxy.authority_url),
        *("--ca-bundle", proxy.ca_bundle),
        *QUICK,
        *options,
    )


def assert_daemon_healthy(mounted: MountProcess) -> None:
    assert mounted.process.poll() is None, mounted.log()[-3000:]
    assert len(os.listdir(mounted.mountpoint)) > 0
    log = mounted.log()
    assert "Traceback" not in log, log[-3000:]
    assert "unexpected error" not in log, log[-3000:]


def test_malformed_json_and_a_wrong_shape_give_eio_and_a_warning(
    emulator: Emulator, proxy: TamperingProxy, mount: MountFactory
) -> None:
    proxy.rules.append(json_rule(listing_of(emulator, "Broken"), lambda _: b'{"value": [{"id'))
    proxy.rules.append(json_rule(listing_of(emulator, "Shapeless"), lambda _: {"value": "x"}))
    mounted = mount_through(proxy, emulator, mount)

    for folder in ("Broken", "Shapeless"):
        result = timed("ls", str(mounted.mountpoint / folder))
        assert result.returncode == 2
        assert "Input/output error" in result.stderr, result.stderr
    log = mounted.log()
    assert "the answer is not JSON" in log
    assert "'value' is not a list" in log
    # The rest of the mailbox is untouched.
    assert (mounted.mountpoint / "Vanishing" / "Going-stays.txt").read_text() == "stays"
    assert_daemon_healthy(mounted)


def spoil_odd_listing(page: dict[str, Any]) -> dict[str, Any]:
    for item in page["value"]:
        if item["subject"] == "No id":
            del item["id"]
        if item["subject"] == "Garbled":
            item.update(subject=12345, receivedDateTime="yesterday", **{"from": 42})
        for attachment in item.get("attachments", []):
            name = attachment.get("name")
            if name == "nameless.txt":
                del attachment["name"]
                attachment["contentType"] = None
            elif name == "noid.txt":
                del attachment["id"]
            elif name == "mystery.dat":
                attachment["@odata.type"] = "#microsoft.graph.hologramAttachment"
            elif name == "wrongsize.txt":
                attachment.update(size="huge", isInline="yes", lastModifiedDateTime=[])
    page["value"].append("not an object")
    return page


def test_missing_fields_odd_types_and_unknown_attachment_kinds_are_served_with_defaults(
    emulator: Emulator, proxy: TamperingProxy, mount: MountFactory
) -> None:
    proxy.rules.append(json_rule(listing_of(emulator, "Odd"), spoil_odd_listing))
    mounted = mount_through(proxy, emulator, mount)
    odd = mounted.mountpoint / "Odd"

    assert sorted(os.listdir(odd)) == [
        "Plain-attachment.bin",
        "Plain-kept.txt",
        "Plain-mystery.dat",
        "Plain-wrongsize.txt",
        "x.txt",
    ]
    assert (odd / "Plain-attachment.bin").read_text() == "nameless"
    assert (odd / "Plain-mystery.dat").read_text() == "mystery"
    assert (odd / "Plain-wrongsize.txt").read_text() == "wrong size"
    assert (odd / "x.txt").read_text() == "garbled"
    assert os.stat(odd / "x.txt").st_mtime == 0  # no usable received time

    log = mounted.log()
    assert "graph sent a message without an id: not shown" in log
    assert "graph sent an attachment without an id: not shown" in log
    assert "graph sent a list item that is not an object: skipped" in log
    assert "attachment type '#microsoft.graph.hologramattachment'" in log
    assert_daemon_healthy(mounted)


def test_huge_names_are_cut_to_the_kernel_limit_and_still_read(
    emulator: Emulator, proxy: TamperingProxy, mount: MountFactory
) -> None:
    mounted = mount_through(proxy, emulator, mount)
    huge = mounted.mountpoint / "Huge"

    names = os.listdir(huge)
    assert len(names) == 2
    for name in names:
        # Strict encoding fails on a character split in the middle of its bytes.
        assert len(name.encode("utf-8", errors="strict")) <= 255, name
        assert name.endswith(".pdf")
    contents = sorted((huge / name).read_text() for name in names)
    assert contents == ["emoji", "huge"]
    assert_daemon_healthy(mounted)


def test_attachments_vanishing_between_ls_and_cat_give_enoent(
    emulator: Emulator, proxy: TamperingProxy, mount: MountFactory
) -> None:
    mounted = mount_through(proxy, emulator, mount, "--log-level", "debug", "--poll-interval", "1")
    vanishing = mounted.mountpoint / "Vanishing"
    assert sorted(os.listdir(vanishing)) == ["Going-soon.txt", "Going-stays.txt", "Whole-gone.txt"]

    listed = emulator.list_messages(MAILBOX, folder_id(emulator, MAILBOX, "Vanishing"))
    messages = {m["subject"]: m for m in listed}
    going = messages["Going"]
    (soon,) = [a for a in going["attachments"] if a["name"] == "soon.txt"]
    with emulator.client() as client:
        url = f"/users/{enc(MAILBOX)}/messages/{enc(going['id'])}/attachments/{enc(soon['id'])}"
        client.delete(url).raise_for_status()
    emulator.delete_message(MAILBOX, messages["Whole"]["id"])

    for name in ("Going-soon.txt", "Whole-gone.txt"):
        result = timed("cat", str(vanishing / name))
        assert result.returncode == 1
        assert "No such file or directory" in result.stderr, result.stderr
    assert (vanishing / "Going-stays.txt").read_text() == "stays"
    assert "NotFoundError" in mounted.log()
    # The next poll takes them out of the listing.
    wait_until(lambda: os.listdir(vanishing) == ["Going-stays.txt"], timeout=15)
    assert_daemon_healthy(mounted)


def test_a_download_shorter_than_announced_is_eio_and_never_cached(
    emulator: Emulator, proxy: TamperingProxy, mount: MountFactory
) -> None:
    liar = folder_id(emulator, MAILBOX, "Liar")
    (short,) = emulator.list_messages(MAILBOX, liar)
    attachment_id = short["attachments"][0]["id"]
    with emulator.client() as client:
        url = f"/users/{enc(MAILBOX)}/messages/{enc(short['id'])}/attachments/{enc(attachment_id)}"
        expected = client.get(f"{url}/$value").content
    assert len(expected) == SHORT_CONTENT_SIZE
    short_rule = short_body_rule(f"/attachments/{attachment_id}/$value", missing=100)
    proxy.rules.append(short_rule)
    mounted = mount_through(proxy, emulator, mount)
    path = mounted.mountpoint / "Liar" / "Short-short.bin"

    # Twice: a cut download must not have been kept as if it were the whole content.
    for _ in range(2):
        result = subprocess.run(["cat", str(path)], capture_output=True, timeout=60)
        assert result.returncode == 1
        assert b"Input/output error" in result.stderr
        # Bytes that did arrive are the true beginning of the content, never made up.
        assert len(result.stdout) < len(expected)
        assert expected.startswith(result.stdout)
    # One warning per failed open, naming the request; none per retry.
    gave_up = [line for line in mounted.log().splitlines() if "giving up" in line]
    assert len(gave_up) == 2
    assert all("WARNING" in line and "$value" in line for line in gave_up)

    proxy.rules.remove(short_rule)
    assert path.read_bytes() == expected
    assert_daemon_healthy(mounted)
