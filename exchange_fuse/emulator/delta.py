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

import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from exchange_fuse.emulator.errors import GraphError, bad_request
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
from exchange_fuse.emulator.store import WELL_KNOWN_NAMES, Folder

if TYPE_CHECKING:
    from exchange_fuse.emulator.graph import Graph, GraphRequest, Reply
    from exchange_fuse.emulator.render import View

WELL_KNOWN = WELL_KNOWN_NAMES
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


def _state(request: GraphRequest, kind: str, folder: Folder | None) -> tuple[dict[str, Any], bool]:
    """The round state the request continues, and whether it continues a page."""
    query = request.query
    token = query.skiptoken or query.deltatoken
    if token is None:
        return {
            "k": kind,
            "f": folder.serial if folder else 0,
            "s": 0,
            "q": request.raw_query,
        }, False
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


def _page_size(request: GraphRequest, query: Query) -> int:
    return request.max_page_size() or query.top or DEFAULT_TOP


def message_delta(graph: Graph, request: GraphRequest, view: View, folder: Folder) -> Reply:
    from exchange_fuse.emulator.graph import json_reply

    mailbox = view.mailbox
    state, paging = _state(request, "m", folder)
    chains: SyncChains = graph.sync_chains
    if "c" in state:
        chains.check(state["c"], state["g"], graph.settings.delta_generations)
    else:
        state["c"] = chains.start()
    query = parse_query(str(state.get("q", "")))
    fields = select_fields(query.select, MESSAGE_FIELDS, "message")
    expand = graph._attachment_expansion(query)
    since_filter = _received_filter(query)
    change_type = (query.get("changeType") or "").lower()
    if not paging:
        state["s"] = state.get("e", 0) if "e" in state else 0
        state["e"] = mailbox.seq
        state["p"] = [0, 0]
    since, end = int(state["s"]), int(state["e"])
    cursor = tuple(state["p"])

    events: list[tuple[tuple[int, int], Json]] = []
    if since == 0:
        for message in folder.messages.values():
            if message.changed_seq <= end and (message.serial,) > cursor[1:]:
                events.append(((0, message.serial), message))  # type: ignore[arg-type]
    else:
        if change_type != "deleted":
            for message in folder.messages.values():
                if since < message.changed_seq <= end:
                    events.append(((message.changed_seq, message.serial), message))  # type: ignore[arg-type]
        if change_type in ("", "deleted"):
            for seq, serial, generation in folder.tombstones:
                if since < seq <= end:
                    events.append(((seq, serial), (serial, generation)))  # type: ignore[arg-type]
        events = [e for e in events if e[0] > cursor]
    events.sort(key=lambda event: event[0])

    size = _page_size(request, query)
    page = events[:size]
    values: list[Json] = []
    for _key, event in page:
        if isinstance(event, tuple):
            serial, generation = event
            values.append(_removed(mailbox, serial, generation, view.immutable))
            continue
        if since_filter and not all(compare(event.received, op, v) for op, v in since_filter):
            continue
        item = {"@odata.type": "#microsoft.graph.message"}
        item.update(render_message(event, view, fields, expand))
        values.append(item)

    body: Json = {"@odata.context": f"{graph.graph_url}/$metadata#Collection(message)"}
    body["value"] = values
    state["g"] = chains.next_generation(state["c"])
    base = graph.origin_url(request.path)
    if len(events) > size:
        state["p"] = list(page[-1][0])
        body["@odata.nextLink"] = link(base, [], **{"$skiptoken": encode_token(state)})
    else:
        state.pop("p", None)
        body["@odata.deltaLink"] = link(base, [], **{"$deltatoken": encode_token(state)})
    return json_reply(200, body, graph._preference(request))


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


def _removed(mailbox: Any, serial: int, generation: int, immutable: bool) -> Json:
    from exchange_fuse.emulator.ids import IMMUTABLE

    message_id = mailbox.codec.message(
        mailbox.index, serial, IMMUTABLE if immutable else generation
    )
    return {
        "@odata.type": "#microsoft.graph.message",
        "id": message_id,
        "@removed": {"reason": "deleted"},
    }


def folder_delta(graph: Graph, request: GraphRequest, view: View) -> Reply:
    from exchange_fuse.emulator.graph import json_reply

    mailbox = view.mailbox
    state, paging = _state(request, "f", None)
    chains: SyncChains = graph.sync_chains
    if "c" in state:
        chains.check(state["c"], state["g"], graph.settings.delta_generations)
    else:
        state["c"] = chains.start()
    query = parse_query(str(state.get("q", "")))
    fields = select_fields(query.select, FOLDER_FIELDS, "mailFolder")
    if not paging:
        state["s"] = state.get("e", 0) if "e" in state else 0
        state["e"] = mailbox.seq
        state["p"] = [0, 0]
    since, end = int(state["s"]), int(state["e"])
    cursor = tuple(state["p"])

    events: list[tuple[tuple[int, int], Folder | int]] = []
    for folder in mailbox.mail_folders():
        if folder.is_hidden:
            continue
        key = (0, folder.serial) if since == 0 else (folder.changed_seq, folder.serial)
        if (since == 0 or since < folder.changed_seq <= end) and key > cursor:
            events.append((key, folder))
    if since:
        for seq, serial in mailbox.folder_tombstones:
            if since < seq <= end and (seq, serial) > cursor:
                events.append(((seq, serial), serial))
    events.sort(key=lambda event: event[0])

    size = _page_size(request, query)
    page = events[:size]
    values: list[Json] = []
    for _key, event in page:
        if isinstance(event, int):
            values.append(
                {
                    "id": mailbox.codec.folder(mailbox.index, event),
                    "@removed": {"reason": "deleted"},
                }
            )
        else:
            values.append(folder_json(event, fields))
    body: Json = {"@odata.context": f"{graph.graph_url}/$metadata#Collection(mailFolder)"}
    body["value"] = values
    state["g"] = chains.next_generation(state["c"])
    base = graph.origin_url(request.path)
    if len(events) > size:
        state["p"] = list(page[-1][0])
        body["@odata.nextLink"] = link(base, [], **{"$skiptoken": encode_token(state)})
    else:
        state.pop("p", None)
        body["@odata.deltaLink"] = link(base, [], **{"$deltatoken": encode_token(state)})
    return json_reply(200, body)
