"""$filter, $orderby, $top and the error shapes of bad queries."""

from __future__ import annotations

import httpx
import pytest

from tests.emulator.conftest import DEMO
from tests.support.emulator import Emulator

USER = f"/users/{DEMO}"
INBOX = f"{USER}/mailFolders/inbox/messages"


def _subjects(client: httpx.Client, url: str, **params: str) -> list[str | None]:
    response = client.get(url, params={"$top": "100", "$select": "subject", **params})
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["value"]]


def test_received_time_ranges_and_order(demo: Emulator) -> None:
    with demo.client() as client:
        march = _subjects(
            client,
            INBOX,
            **{
                "$filter": "receivedDateTime ge 2024-03-15T00:00:00Z "
                "and receivedDateTime lt 2024-03-25T00:00:00Z",
                "$orderby": "receivedDateTime asc",
            },
        )
    assert march == ["Quarterly review", "Shared: Q2 plan", "Newsletter"]


def test_order_by_must_lead_the_filter(demo: Emulator) -> None:
    with demo.client() as client:
        bad = client.get(
            INBOX,
            params={"$filter": "hasAttachments eq true", "$orderby": "receivedDateTime desc"},
        )
        good = _subjects(
            client,
            INBOX,
            **{
                "$filter": "receivedDateTime ge 1900-01-01T00:00:00Z and hasAttachments eq true",
                "$orderby": "receivedDateTime desc",
            },
        )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "InefficientFilter"
    assert bad.json()["error"]["message"] == (
        "The restriction or sort order is too complex for this operation."
    )
    assert len(good) == 8


def test_mailbox_wide_listing_spans_folders(demo: Emulator) -> None:
    with demo.client() as client:
        everything = _subjects(client, f"{USER}/messages")
        invoices = _subjects(client, f"{USER}/messages", **{"$filter": "subject eq 'Invoice'"})
    assert len(everything) == 9 + 2 + 1 + 1 + 3 + 1
    assert invoices == ["Invoice", "Invoice"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"$top": "0"}, "BadRequest"),
        ({"$top": "1001"}, "BadRequest"),
        ({"$select": "subject,nonsense"}, "RequestBroker--ParseUri"),
        ({"$filter": "subject has 'x'"}, "ErrorInvalidUrlQueryFilter"),
        ({"$filter": "colour eq 'blue'"}, "RequestBroker--ParseUri"),
        ({"$skiptoken": "garbage"}, "ErrorInvalidUrlQuery"),
    ],
)
def test_bad_queries_get_graph_errors(demo: Emulator, params: dict, code: str) -> None:
    with demo.client() as client:
        response = client.get(INBOX, params=params, headers={"client-request-id": "abc-123"})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    inner = body["error"]["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == "abc-123"
    assert "date" in inner


def test_top_1000_is_accepted_and_next_links_keep_query_options(demo: Emulator) -> None:
    with demo.client() as client:
        top = client.get(INBOX, params={"$top": "1000"})
        first = client.get(INBOX, params={"$top": "2", "$select": "subject"}).json()
    assert top.status_code == 200
    link = first["@odata.nextLink"]
    assert "$select=subject" in link and "$top=2" in link
    assert "$skip=2" not in link
