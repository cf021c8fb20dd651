"""Graph's surprising behaviours, each on by default and each switchable.

A client that copes with all of them copes with Graph; switching one off shows whether a
client depends on it being there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(slots=True)
class Quirks:
    # ``size`` counts metadata, so it is larger than the bytes $value returns.
    size_overhead: bool = True
    # Ids use the standard base64 alphabet: they contain "/", "+" and "=" (start-up only).
    special_ids: bool = True
    # ``hasAttachments`` is false when a message's only attachments are inline.
    inline_not_counted: bool = True
    # Item attachments have no ``contentBytes`` (use $value) ...
    item_without_content_bytes: bool = True
    # ... and ``contentType`` null.
    item_without_content_type: bool = True
    # ``$value`` of a reference attachment answers 405.
    reference_value_405: bool = True

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def set(self, name: str, value: bool) -> None:
        if name not in self.names():
            raise ValueError(f"unknown quirk {name!r} (known: {', '.join(self.names())})")
        setattr(self, name, value)

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)
