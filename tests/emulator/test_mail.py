"""Folders, messages and attachments of the demo mailbox, read the way a client reads them."""

from __future__ import annotations

import base64

import httpx

from tests.emulator.conftest import DEMO
from tests.support.emulator import IMMUTABLE, Emulator, enc

USER = f"/users/{DEMO}"
ATTACHMENT_SELECT = "attachments($select=id,name,contentType,size,isInline,lastModifiedDateTime)"


def _folder_id(emulator: Emulator, path: str) -> str:
    by_id = {}
    for folder in emulator.list_folders(DEMO):
        by_id[folder["id"]] = folder
    for folder in by_id.values():
        names = [folder["displayName"]]
        parent = by_id.get(folder["parentFolderId"])
        while parent is not None:
            names.insert(0, parent["displayName"])
            parent = by_id.get(parent["parentFolderId"])
        if "/".join(names) == path:
            return str(folder["id"])
    raise AssertionError(f"no folder {path}")


def _all_pages(client: httpx.Client, url: str, **params: str) -> list[dict]:
    items: list[dict] = []
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["value"])
        if "@odata.nextLink" not in body:
            return items
        response = client.get(body["@odata.nextLink"])


def test_root_lists_only_the_children_of_the_top_folder(demo: Emulator) -> None:
    with demo.client() as client:
        body = client.get(f"{USER}/mailFolders", params={"$top": "50"}).json()
        root = client.get(f"{USER}/mailFolders/msgfolderroot").json()

    names = [folder["displayName"] for folder in body["value"]]
    assert "Inbox" in names and "Projects" in names
    assert "Invoices" not in names  # a child of Inbox
    assert all(folder["parentFolderId"] == root["id"] for folder in body["value"])
    assert root["displayName"] == "Top of Information Store"


def test_pages_follow_next_links(demo: Emulator) -> None:
    with demo.client() as client:
        default = client.get(f"{USER}/mailFolders/inbox/messages").json()
        first = client.get(f"{USER}/mailFolders", params={"$top": "4"}).json()
        folders = _all_pages(client, f"{USER}/mailFolders", **{"$top": "4"})
        messages = _all_pages(client, f"{USER}/mailFolders/inbox/messages", **{"$top": "2"})

    assert len(default["value"]) == 9  # below Graph's default page size of 10
    assert "@odata.nextLink" not in default
    assert len(first["value"]) == 4
    assert "$top=4" in first["@odata.nextLink"]
    assert len(folders) == len({f["id"] for f in folders}) == 9
    assert [m["id"] for m in messages] == [m["id"] for m in default["value"]]


def test_nested_folders_and_counts(demo: Emulator) -> None:
    folders = {f["displayName"]: f for f in demo.list_folders(DEMO)}

    assert folders["Invoices"]["childFolderCount"] == 2
    assert folders["Invoices"]["totalItemCount"] == 2
    assert folders["2024"]["parentFolderId"] == folders["Invoices"]["id"]
    assert folders["Empty"]["totalItemCount"] == 0
    assert set(folders["Inbox"]) >= {
        "id",
        "displayName",
        "parentFolderId",
        "childFolderCount",
        "unreadItemCount",
        "totalItemCount",
        "isHidden",
    }


def test_well_known_names_address_folders(demo: Emulator) -> None:
    with demo.client() as client:
        inbox = client.get(f"{USER}/mailFolders/inbox").json()
        deleted = client.get(f"{USER}/mailFolders/DeletedItems").json()
        missing = client.get(f"{USER}/mailFolders/clutter")

    assert inbox["displayName"] == "Inbox"
    assert deleted["displayName"] == "Deleted Items"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"


def test_messages_with_select_and_expanded_attachments(demo: Emulator) -> None:
    with demo.client() as client:
        messages = _all_pages(
            client,
            f"{USER}/mailFolders/inbox/messages",
            **{"$select": "subject,receivedDateTime,hasAttachments", "$expand": ATTACHMENT_SELECT},
        )

    by_subject = {m["subject"]: m for m in messages}
    assert len(messages) == 9
    invoice = by_subject["Invoice INV-2024-0042"]
    assert set(invoice) == {
        "@odata.etag",
        "id",
        "subject",
        "receivedDateTime",
        "hasAttachments",
        "attachments",
    }
    names = [(a["name"], a["isInline"]) for a in invoice["attachments"]]
    assert names == [("INV-2024-0042.pdf", False), ("logo.png", True)]
    assert all("contentBytes" not in a for a in invoice["attachments"])
    # Newest first, as Graph lists them.
    received = [m["receivedDateTime"] for m in messages]
    assert received == sorted(received, reverse=True)
    assert by_subject[None]["attachments"][0]["name"] == "scan.pdf"


def test_expanding_a_derived_attachment_property_is_refused(demo: Emulator) -> None:
    with demo.client() as client:
        response = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$expand": "attachments($select=id,name,contentId)"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "RequestBroker--ParseUri"
    assert "contentId" in error["message"]


def test_value_is_byte_exact_with_content_length(demo: Emulator) -> None:
    with demo.client() as client:
        messages = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$top": "50", "$select": "subject", "$expand": "attachments"},
        ).json()["value"]
        invoice = next(m for m in messages if m["subject"] == "Invoice INV-2024-0042")
        pdf = invoice["attachments"][0]
        url = f"{USER}/messages/{enc(invoice['id'])}/attachments/{enc(pdf['id'])}/$value"
        response = client.get(url)

    expected = base64.b64decode(pdf["contentBytes"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert int(response.headers["content-length"]) == len(expected)
    assert "transfer-encoding" not in response.headers
    assert response.content == expected
    assert response.content.startswith(b"%PDF-")
    # Graph's size counts metadata: larger than the content.
    assert pdf["size"] > len(expected)


def test_ids_need_percent_encoding(demo: Emulator) -> None:
    with demo.client() as client:
        message = client.get(f"{USER}/mailFolders/inbox/messages", params={"$top": "1"}).json()
        message_id = message["value"][0]["id"]
        raw = client.get(f"{USER}/messages/{message_id}")
        encoded = client.get(f"{USER}/messages/{enc(message_id)}")

    assert {"/", "+", "="} <= set(message_id)
    assert raw.status_code in (400, 404)
    assert encoded.status_code == 200
    assert encoded.json()["id"] == message_id


def test_item_attachments_have_no_bytes_but_a_mime_value(demo: Emulator) -> None:
    with demo.client(headers=IMMUTABLE) as client:
        messages = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$top": "50", "$filter": "hasAttachments eq true"},
        ).json()["value"]
        forwarded = next(m for m in messages if m["subject"] == "FW: Contract signed")
        base = f"{USER}/messages/{enc(forwarded['id'])}/attachments"
        listed = client.get(base).json()["value"]
        item = listed[0]
        expanded = client.get(
            f"{base}/{enc(item['id'])}",
            params={"$expand": "microsoft.graph.itemattachment/item"},
        ).json()
        value = client.get(f"{base}/{enc(item['id'])}/$value")

    assert item["@odata.type"] == "#microsoft.graph.itemAttachment"
    assert item["contentType"] is None
    assert "contentBytes" not in item
    assert expanded["item"]["@odata.type"] == "#microsoft.graph.message"
    assert expanded["item"]["subject"] == "Contract signed"
    assert value.headers["content-type"] == "message/rfc822"
    assert int(value.headers["content-length"]) == len(value.content)
    assert b"Subject: Contract signed" in value.content
    assert b"contract-signed.pdf" in value.content


def test_event_and_contact_items(demo: Emulator) -> None:
    with demo.client() as client:
        messages = client.get(f"{USER}/mailFolders/inbox/messages", params={"$top": "50"})
        review = next(m for m in messages.json()["value"] if m["subject"] == "Quarterly review")
        base = f"{USER}/messages/{enc(review['id'])}/attachments"
        event, contact = client.get(base).json()["value"]
        kinds = []
        values = []
        for attachment in (event, contact):
            url = f"{base}/{enc(attachment['id'])}"
            item = client.get(url, params={"$expand": "microsoft.graph.itemattachment/item"})
            kinds.append(item.json()["item"]["@odata.type"])
            values.append(client.get(f"{url}/$value"))

    assert kinds == ["#microsoft.graph.event", "#microsoft.graph.contact"]
    assert values[0].headers["content-type"].startswith("text/calendar")
    assert values[0].content.startswith(b"BEGIN:VCALENDAR")
    assert values[1].headers["content-type"].startswith("text/vcard")
    assert b"FN:Dana Fischer" in values[1].content


def test_reference_attachments_answer_405(demo: Emulator) -> None:
    with demo.client() as client:
        messages = client.get(f"{USER}/mailFolders/inbox/messages", params={"$top": "50"})
        shared = next(m for m in messages.json()["value"] if m["subject"] == "Shared: Q2 plan")
        base = f"{USER}/messages/{enc(shared['id'])}/attachments"
        link = client.get(base).json()["value"][0]
        value = client.get(f"{base}/{enc(link['id'])}/$value")

    assert link["@odata.type"] == "#microsoft.graph.referenceAttachment"
    assert link["sourceUrl"].startswith("https://")
    assert value.status_code == 405
    assert set(value.json()["error"]) == {"code", "message", "innerError"}


def test_inline_only_mail_has_no_attachments_flag(demo: Emulator) -> None:
    with demo.client() as client:
        messages = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={
                "$top": "50",
                "$select": "subject,hasAttachments",
                "$expand": ATTACHMENT_SELECT,
            },
        ).json()["value"]
        flagged = client.get(
            f"{USER}/mailFolders/inbox/messages",
            params={"$top": "50", "$filter": "hasAttachments eq true", "$select": "subject"},
        ).json()["value"]

    newsletter = next(m for m in messages if m["subject"] == "Newsletter")
    assert newsletter["hasAttachments"] is False
    assert [a["isInline"] for a in newsletter["attachments"]] == [True]
    assert "Newsletter" not in {m["subject"] for m in flagged}
    assert len(flagged) == 8


def test_unknown_mailbox_and_me_are_refused(demo: Emulator) -> None:
    with demo.client() as client:
        unknown = client.get("/users/nobody@example.com/mailFolders")
        me = client.get("/me/mailFolders")

    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ErrorInvalidUser"
    assert me.status_code == 400
    assert "delegated" in me.json()["error"]["message"]


def test_delete_attachment_then_message(fresh_demo: Emulator) -> None:
    reports = _folder_id(fresh_demo, "Inbox/Reports")
    with fresh_demo.client(headers=IMMUTABLE) as client:
        messages = client.get(f"{USER}/mailFolders/{enc(reports)}/messages").json()["value"]
        message = messages[0]
        attachments_url = f"{USER}/messages/{enc(message['id'])}/attachments"
        attachment = client.get(attachments_url).json()["value"][0]

        deleted = client.delete(f"{attachments_url}/{enc(attachment['id'])}")
        left = client.get(attachments_url).json()["value"]
        gone = client.get(f"{attachments_url}/{enc(attachment['id'])}/$value")
        flag = client.get(f"{USER}/messages/{enc(message['id'])}").json()["hasAttachments"]

        removed = client.delete(f"{USER}/messages/{enc(message['id'])}")
        after = client.get(f"{USER}/messages/{enc(message['id'])}")
        listing = client.get(f"{USER}/mailFolders/{enc(reports)}/messages").json()["value"]

    assert deleted.status_code == 204
    assert left == []
    assert gone.status_code == 404
    assert flag is False
    assert removed.status_code == 204
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "ErrorItemNotFound"
    assert message["id"] not in {m["id"] for m in listing}
    assert len(listing) == len(messages) - 1
