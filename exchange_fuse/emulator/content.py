"""Attachment content: bytes in memory, or deterministic bytes generated on demand.

Generated content is a pure function of (seed, length), produced in independent blocks, so
a 200 MB attachment is streamed block by block and never held in memory, and any block can
be produced without the ones before it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator

BLOCK = 64 * 1024


class Content:
    """The bytes of an attachment or item, with their exact length known up front."""

    length: int

    def chunks(self) -> Iterator[bytes]:
        raise NotImplementedError

    def read(self) -> bytes:
        return b"".join(self.chunks())


class BytesContent(Content):
    __slots__ = ("data", "length")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def chunks(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, self.length, BLOCK):
            yield bytes(view[start : start + BLOCK])

    def read(self) -> bytes:
        return self.data


class GeneratedContent(Content):
    """``length`` pseudo-random bytes fixed by ``seed`` (see ``generated_block``)."""

    __slots__ = ("length", "seed")

    def __init__(self, seed: int, length: int) -> None:
        self.seed = seed
        self.length = length

    def chunks(self) -> Iterator[bytes]:
        for index in range(0, (self.length + BLOCK - 1) // BLOCK):
            block = generated_block(self.seed, index)
            remaining = self.length - index * BLOCK
            yield block if remaining >= BLOCK else block[:remaining]


class LazyContent(Content):
    """Bytes produced by ``load`` when first needed and not kept (large parsed parts)."""

    __slots__ = ("length", "load")

    def __init__(self, length: int, load: Callable[[], bytes]) -> None:
        self.length = length
        self.load = load

    def chunks(self) -> Iterator[bytes]:
        yield from BytesContent(self.load()).chunks()

    def read(self) -> bytes:
        return self.load()


def generated_block(seed: int, index: int) -> bytes:
    """Block ``index`` (64 KiB) of the content generated from ``seed``."""
    return random.Random(seed * 1_000_003 + index).randbytes(BLOCK)


def generated_bytes(seed: int, length: int) -> bytes:
    """All of the generated content for ``seed`` and ``length`` (for tests and small sizes)."""
    return GeneratedContent(seed, length).read()


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (independent of hash randomisation)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
