"""Delta queries: ``mailFolders/delta`` and per-folder ``messages/delta``.

A round covers the changes with sequence numbers in ``(since, end]``, where ``end`` is the
mailbox's sequence when the round started; pages walk it with a cursor, so changes made
while a client pages wait for the next round instead of shifting the pages. The first round
(``since`` 0) returns everything that exists.

Every page and delta link is a new *generation* of its sync chain. Like Exchange, only the
last few generations are kept: an older token answers 410 ``SyncStateNotFound`` and the
client must start over.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from exchange_fuse.emulator.errors import GraphError, bad_request
from exchange_fuse.emulator.ids import IMMUTABLE
from exchange_fuse.emulator.odata import (
    DEFAULT_TOP,
    Query,
    compare,
    decode_token,
    encode_token,
    link,
    parse_query,
    select_fields,
)
from exchange_fuse.emulator.render import FOLDER_FIELDS, MESSAGE_FIELDS, Json, folder_json
from exchange_fuse.emulator.render import message_json as render_message
from exchange_fuse.emulator.store import Folder, Mailbox, Message

if TYPE_CHECKING:
    from exchange_fuse.emulator.graph import Graph, GraphRequest, Reply
    from exchange_fuse.emulator.render import View

MAX_CHAINS = 20_000


class SyncChains:
    """The newest generation issued per sync chain; old generations are forgotten."""

    def __init__(self) -> None:
        self._highest: OrderedDict[int, int] = OrderedDict()
        self._ids = itertools.count(1)

    def start(self) -> int:
        chain = next(self._ids)
        self._highest[chain] = 0
        self._trim()
        return chain

    def check(self, chain: int, generation: int, keep: int) -> None:
        highest = self._highest.get(chain)
        if highest is None or generation <= highest - keep:
            top = highest if highest is not None else generation
            kept = "".join(f"[{g}]" for g in range(top, max(top - keep, 0), -1))
            raise GraphError(
                410,
                "SyncStateNotFound",
                f"The sync state generation is not found; generation={generation};"
                f"[highest={top}]{kept}.",
            )

    def next_generation(self, chain: int) -> int:
        generation = self._highest.get(chain, 0) + 1
        self._highest[chain] = generation
        self._highest.move_to_end(chain)
        return generation

    def expire_all(self) -> None:
        """Forget every chain: each token answers 410 (Exchange evicted its sync state)."""
        self._highest.clear()

    def _trim(self) -> None:
        while len(self._highest) > MAX_CHAINS:
            self._highest.popitem(last=False)


class _Gone(NamedTuple):
    """A message or folder that left: its serial and, for messages, the generation it had."""

    serial: int
    generation: int = 0


Event = tuple[tuple[int, int], Any]  # ((sequence, serial), Message | Folder | _Gone)


def _state(request: GraphRequest, kind: str, folder: Folder | None) -> tuple[dict[str, Any], bool]:
    """The round state the request continues, and whether it continues a page."""
    query = request.query
    token = query.skiptoken or query.deltatoken
    if token is None:
        return {"k": kind, "f": folder.serial if folder else 0, "q": request.raw_query}, False
    state = decode_token(token)
    if (
        state is None
        or state.get("k") != kind
        or state.get("f") != (folder.serial if folder else 0)
        or not isinstance(state.get("c"), int)
        or not isinstance(state.get("g"), int)
    ):
        raise bad_request("The delta token is malformed or belongs to another folder.")
    return state, query.skiptoken is not None


def _run_round(
    graph: Graph,
    request: GraphRequest,
    kind: str,
    mailbox: Mailbox,
    folder: Folder | None,
    events: Callable[[int, int, Query, tuple[int, int], int], list[Event]],
    render: Callable[[Any, Query], Json | None],
    context: str,
) -> Reply:
    """One page of a delta round: the events with keys after the cursor, up to a page."""
    from exchange_fuse.emulator.graph import json_reply

    state, paging = _state(request, kind, folder)
    chains = graph.sync_chains
    if "c" in state:
        chains.check(state["c"], state["g"], graph.settings.delta_generations)
    else:
        state["c"] = chains.start()
    query = parse_query(str(state.get("q", "")))
    if not paging:
        # A new round starts where the last one ended (0: everything that exists).
        state["s"] = state.get("e", 0)
        state["e"] = mailbox.seq
        state["p"] = [0, 0]
    since, end = int(state["s"]), int(state["e"])
    cursor = (int(state["p"][0]), int(state["p"][1]))

    size = request.max_page_size() or query.top or DEFAULT_TOP
    pending = events(since, end, query, cursor, size + 1)
    page = pending[:size]
    values = [value for _key, payload in page if (value := render(payload, query)) is not None]

    body: Json = {"@odata.context": f"{graph.graph_url}/$metadata#Collection({context})"}
    body["value"] = values
    state["g"] = chains.next_generation(state["c"])
    base = graph.origin_url(request.path)
    if len(pending) > size:
        state["p"] = list(page[-1][0])
        body["@odata.nextLink"] = link(base, [], **{"$skiptoken": encode_token(state)})
    else:
        state.pop("p", None)
        body["@odata.deltaLink"] = link(base, [], **{"$deltatoken": encode_token(state)})
    return json_reply(200, body, graph.preference(request))


def message_delta(graph: Graph, request: GraphRequest, view: View, folder: Folder) -> Reply:
    mailbox = view.mailbox

    def events(
        since: int, end: int, query: Query, cursor: tuple[int, int], limit: int
    ) -> list[Event]:
        change_type = (query.get("changeType") or "").lower()
        found: list[Event] = []
        if since == 0:
            # The first round pages through the folder in serial order: start at the cursor
            # instead of scanning, so big folders page in constant time.
            ordered = folder.ordered("serial", lambda items: sorted(items, key=_serial))
            start = bisect.bisect_right(ordered, cursor[1], key=_serial)
            for message in itertools.islice(ordered, start, None):
                if message.changed_seq <= end:
                    found.append(((0, message.serial), message))
                    if len(found) == limit:
                        break
            return found
        if change_type != "deleted":
            for message in folder.messages.values():
                if since < message.changed_seq <= end:
                    found.append(((message.changed_seq, message.serial), message))
        if change_type in ("", "deleted"):
            for seq, serial, generation in folder.tombstones:
                if since < seq <= end:
                    found.append(((seq, serial), _Gone(serial, generation)))
        return _after(found, cursor, limit)

    def render(payload: Message | _Gone, query: Query) -> Json | None:
        if isinstance(payload, _Gone):
            generation = IMMUTABLE if view.immutable else payload.generation
            return {
                "@odata.type": "#microsoft.graph.message",
                "id": mailbox.codec.message(mailbox.index, payload.serial, generation),
                "@removed": {"reason": "deleted"},
            }
        for operator, value in _received_filter(query):
            if not compare(payload.received, operator, value):
                return None
        fields = select_fields(query.select, MESSAGE_FIELDS, "message")
        item: Json = {"@odata.type": "#microsoft.graph.message"}
        item.update(render_message(payload, view, fields, graph.attachment_expansion(query)))
        return item

    return _run_round(graph, request, "m", mailbox, folder, events, render, "message")


def _serial(message: Message) -> int:
    return message.serial


def _after(events: list[Event], cursor: tuple[int, int], limit: int) -> list[Event]:
    """The first ``limit`` events after ``cursor``, in order."""
    return sorted((e for e in events if e[0] > cursor), key=lambda e: e[0])[:limit]


def _received_filter(query: Query) -> list[tuple[str, float]]:
    filters = []
    for clause in query.filters:
        if clause.property != "receivedDateTime" or clause.operator not in ("ge", "gt"):
            raise bad_request(
                "Delta of messages supports only $filter=receivedDateTime ge|gt {value}.",
                "ErrorInvalidUrlQueryFilter",
            )
        filters.append((clause.operator, float(clause.value)))  # type: ignore[arg-type]
    return filters


def folder_delta(graph: Graph, request: GraphRequest, view: View) -> Reply:
    mailbox = view.mailbox

    def events(
        since: int, end: int, query: Query, cursor: tuple[int, int], limit: int
    ) -> list[Event]:
        found: list[Event] = []
        for folder in mailbox.mail_folders():
            if folder.is_hidden:
                continue
            if since == 0:
                found.append(((0, folder.serial), folder))
            elif since < folder.changed_seq <= end:
                found.append(((folder.changed_seq, folder.serial), folder))
        if since:
            for seq, serial in mailbox.folder_tombstones:
                if since < seq <= end:
                    found.append(((seq, serial), _Gone(serial)))
        return _after(found, cursor, limit)

    def render(payload: Folder | _Gone, query: Query) -> Json:
        if isinstance(payload, _Gone):
            folder_id = mailbox.codec.folder(mailbox.index, payload.serial)
            return {"id": folder_id, "@removed": {"reason": "deleted"}}
        return folder_json(payload, select_fields(query.select, FOLDER_FIELDS, "mailFolder"))

    return _run_round(graph, request, "f", mailbox, None, events, render, "mailFolder")
