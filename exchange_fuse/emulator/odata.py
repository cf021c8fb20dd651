"""OData query options as Graph's mail endpoints accept them, and opaque paging tokens.

Supported: ``$select``, ``$top``, ``$skip``, ``$filter`` (``and`` of comparisons on
``hasAttachments``, ``isRead``, ``subject`` and the date properties), ``$orderby`` with
Graph's InefficientFilter rule, ``$expand=attachments($select=...)`` and
``$expand=microsoft.graph.itemattachment/item``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode

from exchange_fuse.emulator.errors import GraphError, bad_request, unknown_property

MAX_TOP = 1000
DEFAULT_TOP = 10

_FILTERABLE = {
    "hasattachments": "hasAttachments",
    "isread": "isRead",
    "subject": "subject",
    "receiveddatetime": "receivedDateTime",
    "sentdatetime": "sentDateTime",
    "lastmodifieddatetime": "lastModifiedDateTime",
    "createddatetime": "createdDateTime",
}
_SORTABLE = {
    "receiveddatetime": "receivedDateTime",
    "sentdatetime": "sentDateTime",
    "subject": "subject",
    "lastmodifieddatetime": "lastModifiedDateTime",
    "createddatetime": "createdDateTime",
}
_OPERATORS = {"eq", "ne", "gt", "ge", "lt", "le"}
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|gt|ge|lt|le)\s+(.+?)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_EXPAND_ATTACHMENTS = re.compile(r"^attachments(?:\((.*)\))?$", re.IGNORECASE)
_ITEM_EXPANSION = "microsoft.graph.itemattachment/item"


@dataclass(frozen=True, slots=True)
class Clause:
    property: str
    operator: str
    value: object


@dataclass(slots=True)
class Query:
    params: list[tuple[str, str]]
    select: list[str] | None = None
    top: int | None = None
    offset: int = 0
    filters: list[Clause] = field(default_factory=list)
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (property, descending)
    expand_attachments: list[str] | None = None  # [] means every property
    expand_item: bool = False
    skiptoken: str | None = None
    deltatoken: str | None = None

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key.lower() == name.lower():
                return value
        return None


def parse_query(raw: str) -> Query:
    params = parse_qsl(raw, keep_blank_values=True)
    query = Query(params=params)
    for key, value in params:
        name = key.lower()
        if name == "$select":
            query.select = [part.strip() for part in value.split(",") if part.strip()]
        elif name == "$top":
            query.top = _top(value)
        elif name == "$skip":
            query.offset = _non_negative(value, "$skip")
        elif name == "$skiptoken":
            query.skiptoken = value
        elif name == "$deltatoken":
            query.deltatoken = value
        elif name == "$filter":
            query.filters = parse_filter(value)
        elif name == "$orderby":
            query.orderby = parse_orderby(value)
        elif name == "$expand":
            _expand(query, value)
    return query


def _top(value: str) -> int:
    try:
        top = int(value)
    except ValueError:
        raise bad_request(f"Invalid value '{value}' for $top query option found.") from None
    if not 1 <= top <= MAX_TOP:
        raise bad_request(f"The value of $top must be between 1 and {MAX_TOP}.")
    return top


def _non_negative(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise bad_request(f"Invalid value '{value}' for {name} query option found.")
    return number


def _expand(query: Query, value: str) -> None:
    for part in _split_top_level(value):
        text = part.strip()
        match = _EXPAND_ATTACHMENTS.match(text)
        if match:
            inner = match.group(1) or ""
            selected: list[str] = []
            for option in inner.split(";"):
                key, _, fields = option.partition("=")
                if key.strip().lower() == "$select":
                    selected = [f.strip() for f in fields.split(",") if f.strip()]
                elif key.strip():
                    raise bad_request(f"Query option '{key.strip()}' is not allowed in $expand.")
            query.expand_attachments = selected
        elif text.lower() == _ITEM_EXPANSION:
            query.expand_item = True
        else:
            raise unknown_property(text, "message")


def _split_top_level(value: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in value:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_filter(text: str) -> list[Clause]:
    clauses = []
    for piece in _AND.split(text.strip()):
        match = _CLAUSE.match(piece.strip("() "))
        if not match:
            raise bad_request(
                f"Invalid filter clause: {piece.strip()}", "ErrorInvalidUrlQueryFilter"
            )
        name, operator, literal = match.groups()
        prop = _FILTERABLE.get(name.lower())
        if prop is None:
            raise unknown_property(name, "message")
        clauses.append(Clause(prop, operator.lower(), _literal(prop, literal)))
    return clauses


def _literal(prop: str, literal: str) -> object:
    if prop in ("hasAttachments", "isRead"):
        if literal.lower() not in ("true", "false"):
            raise bad_request(f"Invalid filter clause: {prop} needs true or false")
        return literal.lower() == "true"
    if prop == "subject":
        if len(literal) < 2 or literal[0] != "'" or literal[-1] != "'":
            raise bad_request("Invalid filter clause: a string literal needs single quotes")
        return literal[1:-1].replace("''", "'")
    return parse_datetime(literal.strip("'"))


def parse_datetime(text: str) -> float:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f"The DateTimeOffset text '{text}' should be in format "
            "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?'"
        ) from None
    if stamp.tzinfo is None:
        raise bad_request(f"The DateTimeOffset text '{text}' has no time zone")
    return stamp.timestamp()


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    order = []
    for piece in text.split(","):
        words = piece.split()
        if not words or len(words) > 2:
            raise bad_request(f"Invalid $orderby: {text}")
        prop = _SORTABLE.get(words[0].lower())
        if prop is None:
            raise unknown_property(words[0], "message")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise bad_request(f"Invalid $orderby direction: {words[1]}")
        order.append((prop, direction == "desc"))
    return order


def check_filter_and_order(query: Query) -> None:
    """Graph's rule: every sorted property is filtered on, first and in the same order."""
    if not query.filters or not query.orderby:
        return
    filtered = [clause.property for clause in query.filters]
    # Repeated comparisons of one property (a date range) count as one position.
    positions: list[str] = []
    for prop in filtered:
        if not positions or positions[-1] != prop:
            positions.append(prop)
    for index, (prop, _descending) in enumerate(query.orderby):
        if index >= len(positions) or positions[index] != prop:
            raise GraphError(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )


def compare(value: object, operator: str, wanted: object) -> bool:
    if operator == "eq":
        return value == wanted
    if operator == "ne":
        return value != wanted
    if value is None:
        return False
    if operator == "gt":
        return value > wanted  # type: ignore[operator]
    if operator == "ge":
        return value >= wanted  # type: ignore[operator]
    if operator == "lt":
        return value < wanted  # type: ignore[operator]
    return value <= wanted  # type: ignore[operator]


def select_fields(
    select: list[str] | None, known: dict[str, str], type_name: str
) -> list[str] | None:
    """The canonical property names selected, or None for all; unknown names are an error."""
    if select is None:
        return None
    chosen = []
    for name in select:
        canonical = known.get(name.lower())
        if canonical is None:
            raise unknown_property(name, type_name)
        if canonical not in chosen:
            chosen.append(canonical)
    return chosen


def encode_token(state: dict[str, object]) -> str:
    """An opaque token for ``$skiptoken`` and ``$deltatoken``."""
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, object] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def page_offset(query: Query) -> int:
    """Where a page starts: from our ``$skiptoken``, else the client's own ``$skip``."""
    if query.skiptoken is None:
        return query.offset
    state = decode_token(query.skiptoken)
    offset = state.get("o") if state is not None else None
    if not isinstance(offset, int) or offset < 0:
        raise bad_request("The $skiptoken is malformed.", "ErrorInvalidUrlQuery")
    return offset


def link(base: str, params: list[tuple[str, str]], **replace: str) -> str:
    """``base`` with the original query options, paging options replaced by ``replace``."""
    dropped = {"$skip", "$skiptoken", "$deltatoken", *(k.lower() for k in replace)}
    kept = [(k, v) for k, v in params if k.lower() not in dropped]
    kept.extend(replace.items())
    if not kept:
        return base
    return base + "?" + urlencode(kept, quote_via=quote, safe="$,()'=:")


def odata_sorter(
    orderby: list[tuple[str, bool]], value_of: Callable[[object, str], object]
) -> Callable[[list], list]:
    """A function sorting messages by ``orderby`` (stable, last key applied first)."""

    def sort(items: list) -> list:
        for prop, descending in reversed(orderby):
            items.sort(key=lambda item: _sort_key(value_of(item, prop)), reverse=descending)
        return items

    return sort


def _sort_key(value: object) -> tuple[int, object]:
    return (0, "") if value is None else (1, value)


__all__ = [
    "DEFAULT_TOP",
    "MAX_TOP",
    "Clause",
    "Query",
    "check_filter_and_order",
    "compare",
    "decode_token",
    "encode_token",
    "link",
    "page_offset",
    "parse_query",
    "select_fields",
]
