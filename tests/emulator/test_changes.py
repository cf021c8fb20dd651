"""Changes made through the Graph API and how listings and delta queries reflect them."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import httpx

from tests.emulator.conftest import DEMO
from tests.support.emulator import IMMUTABLE, Emulator, enc

USER = f"/users/{DEMO}"


def _mime(subject: str, *, attachment: bytes | None = None) -> bytes:
    mail = EmailMessage()
    mail["From"] = "New Sender <new@example.net>"
    mail["To"] = DEMO
    mail["Subject"] = subject
    mail["Date"] = "Fri, 05 Apr 2024 10:00:00 +0000"
    mail.set_content("Hello.")
    if attachment is not None:
        mail.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="new.bin"
        )
    return mail.as_bytes()


def _delta_round(client: httpx.Client, url: str, **kwargs: object) -> tuple[list[dict], str]:
    """Every item of one delta round, and its deltaLink."""
    items: list[dict] = []
    response = client.get(url, **kwargs)  # type: ignore[arg-type]
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["value"])
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        response = client.get(body["@odata.nextLink"])


def test_message_delta_reports_new_changed_and_removed_mail(fresh_demo: Emulator) -> None:
    page = {"Prefer": "odata.maxpagesize=3"}
    with fresh_demo.client(headers=IMMUTABLE) as client:
        url = f"{USER}/mailFolders/inbox/messages/delta"
        initial, delta_link = _delta_round(
            client, url, params={"$select": "subject,receivedDateTime"}, headers=page
        )
        assert len(initial) == 9
        assert all(set(m) >= {"id", "subject", "receivedDateTime"} for m in initial)
        assert all("body" not in m for m in initial)

        empty, delta_link = _delta_round(client, delta_link)
        assert empty == []

        added = fresh_demo.add_message(DEMO, "inbox", _mime("Arrived", attachment=b"x"))
        victim = next(m for m in initial if m["subject"] == "Newsletter")
        fresh_demo.delete_message(DEMO, victim["id"])
        scan = next(m for m in initial if m["subject"] is None)
        attachments = client.get(f"{USER}/messages/{enc(scan['id'])}/attachments").json()
        client.delete(
            f"{USER}/messages/{enc(scan['id'])}/attachments/{enc(attachments['value'][0]['id'])}"
        )

        changes, _ = _delta_round(client, delta_link)

    removed = [c for c in changes if "@removed" in c]
    updated = {c["id"]: c for c in changes if "@removed" not in c}
    assert [c["id"] for c in removed] == [victim["id"]]
    assert removed[0]["@removed"] == {"reason": "deleted"}
    assert set(updated) == {added, scan["id"]}
    # The token kept the $select of the first request.
    assert set(updated[added]) == {
        "@odata.type",
        "@odata.etag",
        "id",
        "subject",
        "receivedDateTime",
    }


def test_stale_delta_tokens_answer_410(fresh_demo: Emulator) -> None:
    with fresh_demo.client() as client:
        url = f"{USER}/mailFolders/inbox/messages/delta"
        first = client.get(url, headers={"Prefer": "odata.maxpagesize=1"}).json()
        link = first["@odata.nextLink"]
        for _ in range(4):
            link = client.get(link).json().get("@odata.nextLink", link)
        stale = client.get(first["@odata.nextLink"])

        _, delta_link = _delta_round(client, url)
        fresh_demo.expire_delta_tokens()
        expired = client.get(delta_link)

    for response in (stale, expired):
        assert response.status_code == 410
        error = response.json()["error"]
        assert error["code"] == "SyncStateNotFound"
        assert error["message"].startswith("The sync state generation is not found")


def test_moves_change_ids_unless_immutable_ids_are_asked_for(fresh_demo: Emulator) -> None:
    with fresh_demo.client() as client:
        inbox = client.get(f"{USER}/mailFolders/inbox/messages", params={"$top": "50"}).json()
        rest_id = inbox["value"][0]["id"]
        moved = client.post(
            f"{USER}/messages/{enc(rest_id)}/move", json={"destinationId": "archive"}
        )
        old = client.get(f"{USER}/messages/{enc(rest_id)}")
        archive = client.get(f"{USER}/mailFolders/archive/messages").json()["value"]

    assert moved.status_code == 201
    assert moved.json()["id"] != rest_id
    assert old.status_code == 404
    assert old.json()["error"]["code"] == "ErrorItemNotFound"
    assert [m["id"] for m in archive] == [moved.json()["id"]]

    with fresh_demo.client(headers=IMMUTABLE) as client:
        inbox = client.get(f"{USER}/mailFolders/inbox/messages").json()
        immutable_id = inbox["value"][0]["id"]
        attachments = client.get(f"{USER}/messages/{enc(immutable_id)}/attachments").json()
        moved = client.post(
            f"{USER}/messages/{enc(immutable_id)}/move", json={"destinationId": "archive"}
        )
        same = client.get(f"{USER}/messages/{enc(immutable_id)}")
        attachment_id = attachments["value"][0]["id"]
        value = client.get(
            f"{USER}/messages/{enc(immutable_id)}/attachments/{enc(attachment_id)}/$value"
        )

    assert moved.json()["id"] == immutable_id
    assert moved.headers["preference-applied"] == 'IdType="ImmutableId"'
    assert same.status_code == 200
    assert same.json()["parentFolderId"] == moved.json()["parentFolderId"]
    assert value.status_code == 200


def test_moved_mail_leaves_the_source_delta_and_joins_the_destination(
    fresh_demo: Emulator,
) -> None:
    with fresh_demo.client(headers=IMMUTABLE) as client:
        inbox_url = f"{USER}/mailFolders/inbox/messages/delta"
        archive_url = f"{USER}/mailFolders/archive/messages/delta"
        inbox, inbox_link = _delta_round(client, inbox_url)
        _, archive_link = _delta_round(client, archive_url)
        fresh_demo.move_message(DEMO, inbox[0]["id"], "archive")
        left, _ = _delta_round(client, inbox_link)
        joined, _ = _delta_round(client, archive_link)

    assert [(m["id"], "@removed" in m) for m in left] == [(inbox[0]["id"], True)]
    assert [(m["id"], "@removed" in m) for m in joined] == [(inbox[0]["id"], False)]


def test_permanent_delete_and_soft_delete(fresh_demo: Emulator) -> None:
    with fresh_demo.client(headers=IMMUTABLE) as client:
        messages = client.get(f"{USER}/mailFolders/inbox/messages").json()["value"]
        soft, hard = messages[0]["id"], messages[1]["id"]
        assert client.delete(f"{USER}/messages/{enc(soft)}").status_code == 204
        purge = client.post(f"{USER}/messages/{enc(hard)}/permanentDelete")
        recoverable = client.get(f"{USER}/mailFolders/recoverableitemsdeletions/messages").json()[
            "value"
        ]
        mailbox_wide = client.get(f"{USER}/messages", params={"$top": "100"}).json()["value"]
        deleted_items = client.get(f"{USER}/mailFolders/deleteditems/messages").json()["value"]

    assert purge.status_code == 204
    # DELETE is recoverable (Recoverable Items), not a move to Deleted Items.
    assert [m["id"] for m in recoverable] == [soft]
    assert deleted_items == []
    assert {soft, hard}.isdisjoint(m["id"] for m in mailbox_wide)


def test_new_mail_through_graph_with_mime_and_attachments(fresh_demo: Emulator) -> None:
    mime = _mime("Fresh delivery", attachment=b"\x00payload\xff")
    message_id = fresh_demo.add_message(DEMO, "inbox", mime)
    extra = fresh_demo.add_attachment(
        DEMO, message_id, "second.csv", b"a,b\n", content_type="text/csv"
    )
    with fresh_demo.client(headers=IMMUTABLE) as client:
        message = client.get(
            f"{USER}/messages/{enc(message_id)}",
            params={"$select": "subject,from,receivedDateTime", "$expand": "attachments"},
        ).json()
        raw = client.get(f"{USER}/messages/{enc(message_id)}/$value")

    assert message["subject"] == "Fresh delivery"
    assert message["from"]["emailAddress"]["address"] == "new@example.net"
    assert message["receivedDateTime"] == "2024-04-05T10:00:00Z"
    assert [a["name"] for a in message["attachments"]] == ["new.bin", "second.csv"]
    assert base64.b64decode(message["attachments"][0]["contentBytes"]) == b"\x00payload\xff"
    assert message["attachments"][1]["id"] == extra
    assert raw.content == mime


def test_json_message_creation(fresh_demo: Emulator) -> None:
    with fresh_demo.client() as client:
        created = client.post(
            f"{USER}/mailFolders/inbox/messages",
            json={
                "subject": "Made from JSON",
                "body": {"contentType": "text", "content": "hi"},
                "toRecipients": [{"emailAddress": {"address": DEMO}}],
                "attachments": [
                    {
                        "@odata.type": "#microsoft.graph.fileAttachment",
                        "name": "note.txt",
                        "contentBytes": base64.b64encode(b"note").decode(),
                    }
                ],
            },
        )
        too_big = client.post(
            f"{USER}/messages/{enc(created.json()['id'])}/attachments",
            json={
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "big.bin",
                "contentBytes": base64.b64encode(b"x" * (3 * 1024 * 1024 + 1)).decode(),
            },
        )
    assert created.status_code == 201
    assert created.json()["hasAttachments"] is True
    assert created.json()["isDraft"] is True
    assert too_big.status_code == 413


def test_folder_create_rename_delete(fresh_demo: Emulator) -> None:
    folder_id = fresh_demo.create_folder(DEMO, "inbox", "Receipts")
    with fresh_demo.client() as client:
        duplicate = client.post(
            f"{USER}/mailFolders/inbox/childFolders", json={"displayName": "receipts"}
        )
        fresh_demo.rename_folder(DEMO, folder_id, "Receipts 2024")
        renamed = client.get(f"{USER}/mailFolders/{enc(folder_id)}").json()
        protected = client.delete(f"{USER}/mailFolders/inbox")
        fresh_demo.delete_folder(DEMO, folder_id)
        in_deleted = client.get(f"{USER}/mailFolders/deleteditems/childFolders").json()["value"]
        fresh_demo.delete_folder(DEMO, folder_id)
        gone = client.get(f"{USER}/mailFolders/{enc(folder_id)}")

    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "ErrorFolderExists"
    assert renamed["displayName"] == "Receipts 2024"
    assert protected.status_code == 403
    assert [f["displayName"] for f in in_deleted] == ["Receipts 2024"]
    assert gone.status_code == 404


def test_folder_delta_follows_the_tree(fresh_demo: Emulator) -> None:
    with fresh_demo.client() as client:
        url = f"{USER}/mailFolders/delta"
        initial, link = _delta_round(client, url, headers={"Prefer": "odata.maxpagesize=4"})
        created = fresh_demo.create_folder(DEMO, "inbox", "New one")
        empty = next(f for f in initial if f["displayName"] == "Empty")
        fresh_demo.rename_folder(DEMO, empty["id"], "Still empty")
        changes, link = _delta_round(client, link)
        fresh_demo.delete_folder(DEMO, created)
        fresh_demo.delete_folder(DEMO, created)
        removed, _ = _delta_round(client, link)

    names = {f["displayName"] for f in initial}
    assert {"Inbox", "Invoices", "2024", "Empty", "Alpha"} <= names
    changed = {f["id"]: f for f in changes}
    assert changed[created]["displayName"] == "New one"
    assert changed[empty["id"]]["displayName"] == "Still empty"
    assert {"id": created, "@removed": {"reason": "deleted"}} in removed


def test_batch_runs_up_to_twenty_requests(demo: Emulator) -> None:
    with demo.client() as client:
        batch = client.post(
            "/$batch",
            json={
                "requests": [
                    {"id": "1", "method": "GET", "url": f"{USER}/mailFolders/inbox"},
                    {"id": "2", "method": "GET", "url": f"{USER}/mailFolders/nope"},
                    {"id": "3", "method": "GET", "url": f"{USER}/mailFolders", "dependsOn": ["2"]},
                ]
            },
        )
        too_many = client.post(
            "/$batch",
            json={
                "requests": [
                    {"id": str(n), "method": "GET", "url": f"{USER}/mailFolders"}
                    for n in range(21)
                ]
            },
        )
    assert batch.status_code == 200
    responses = {r["id"]: r for r in batch.json()["responses"]}
    assert responses["1"]["status"] == 200
    assert responses["1"]["body"]["displayName"] == "Inbox"
    assert responses["2"]["status"] == 400
    assert responses["3"]["status"] == 424
    assert too_many.status_code == 400


def test_throttled_batch_steps_come_back_inside_a_200(fresh_demo: Emulator) -> None:
    fresh_demo.set_faults(throttle_rate=1.0, throttle_retry_after_s=4)
    with fresh_demo.client() as client:
        batch = client.post(
            "/$batch",
            json={"requests": [{"id": "a", "method": "GET", "url": f"{USER}/mailFolders"}]},
        )
    assert batch.status_code == 200
    (step,) = batch.json()["responses"]
    assert step["status"] == 429
    assert step["headers"]["Retry-After"] == "4"
    assert step["body"]["error"]["code"] == "ApplicationThrottled"


def test_message_delta_with_a_received_filter(demo: Emulator) -> None:
    with demo.client() as client:
        items, _ = _delta_round(
            client,
            f"{USER}/mailFolders/inbox/messages/delta",
            params={
                "$filter": "receivedDateTime ge 2024-03-20T00:00:00Z",
                "$select": "subject",
            },
        )
        refused = client.get(
            f"{USER}/mailFolders/inbox/messages/delta",
            params={"$filter": "hasAttachments eq true"},
        )
    assert sorted(str(m["subject"]) for m in items) == [
        "Monthly report: March",
        "Newsletter",
        "None",
        "Shared: Q2 plan",
        "Überweisung März",
    ]
    assert refused.status_code == 400
