"""Private tags: which Private Creator reserves a private element's block (PS3.5 7.8.1).

A private data element (gggg,xxyy), gggg odd and xx in 10-FF, belongs to the block that
the Private Creator element (gggg,00xx) reserves; that element's value names the block.
Elements (gggg,0001-000F) and (gggg,0100-0FFF) belong to no block. One rule for the
pydicom walker's column names, the lean reader's and the tag selection, so they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.common.rows import DEFAULT_ENCODING


def is_private_creator(tag: int) -> bool:
    """(gggg,0010-00FF) of an odd group: a Private Creator element."""
    return bool(tag >> 16 & 1) and 0x0010 <= tag & 0xFFFF <= 0x00FF


def creator_tag(tag: int) -> int | None:
    """The Private Creator element reserving private ``tag``'s block; None: no block."""
    element = tag & 0xFFFF
    if element < 0x1000:
        return None
    return (tag & 0xFFFF0000) | (element >> 8)


def creator_text(value) -> str | None:
    """A Private Creator's value (bytes as stored, text, or several values) as the name
    of its block, without padding; None when empty."""
    if isinstance(value, bytes):
        value = value.decode(DEFAULT_ENCODING)
    elif not isinstance(value, str) and isinstance(value, Sequence):
        value = "\\".join(str(part) for part in value)
    return str(value or "").strip(" \0") or None
