"""Column names: a header element's name and where its column sorts.

* A public element: ``Patient's Name (0010,0010)`` (pydicom's dictionary; unknown ones
  ``Unknown (gggg,eeee)``, group lengths ``Group Length (gggg,0000)``).
* A private element: ``[CREATOR] Description (gggg,eeee)`` with its private creator's
  text (``[Unknown Creator] (gggg,eeee)`` without one); creators themselves are
  ``Private Creator (gggg,00ee)``.
* Inside a sequence: ``Sequence (gggg,eeee) - Element (gggg,eeee)``, the second and later
  items ``Sequence (gggg,eeee) [2] - ...``, and ``#items`` for the true count of a cut list.

Columns sort DicomPath first, then by tag, nested columns right after their sequence.
"""

from __future__ import annotations

import functools
import re

from pydicom.datadict import dictionary_description, get_private_entry
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from transforms.common.private_tags import creator_tag, creator_text
from transforms.common.rows import PATH_COLUMN


def is_skipped_group(group: int) -> bool:
    """Overlays, pixel data and the delimiter/signature groups are never columns."""
    return (
        (group & 0xFF00 == 0x6000 and group % 2 == 0)
        or group in (0x7FE0, 0xFFFA, 0xFFFC, 0xFFFE)
    )


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@functools.lru_cache(maxsize=1 << 16)
def public_name(tag: int) -> str:
    """``element_name`` of a public tag, which depends on the tag alone."""
    return element_name(BaseTag(tag), None)


def element_name(tag: BaseTag, dataset: Dataset | None) -> str:
    """``Patient's Name (0010,0010)``; private ones carry their creator."""
    if not tag.is_private:
        try:
            return f"{dictionary_description(tag)} {tag_text(tag)}"
        except KeyError:
            if tag.element == 0:
                return f"Group Length {tag_text(tag)}"
            return f"Unknown {tag_text(tag)}"
    if tag.is_private_creator:
        return private_element_name(tag, None)
    return private_element_name(tag, _private_creator(tag, dataset))


def private_element_name(tag: BaseTag, creator: str | None) -> str:
    """A private element's name, given its creator's text (None: not found)."""
    if tag.is_private_creator:
        return f"Private Creator {tag_text(tag)}"
    if creator is None:
        return f"[Unknown Creator] {tag_text(tag)}"
    try:
        description = get_private_entry(tag, creator)[2]
    except Exception:  # pylint: disable=broad-except  # KeyError, or a creator it chokes on
        description = ""
    if description:
        return f"[{creator}] {description} {tag_text(tag)}"
    return f"[{creator}] {tag_text(tag)}"


def _private_creator(tag: BaseTag, dataset: Dataset) -> str | None:
    reserving = creator_tag(tag)
    if reserving is None or reserving not in dataset:
        return None
    try:
        return creator_text(dataset[reserving].value)
    except Exception:  # pylint: disable=broad-except  # a creator that does not convert
        return None


_SEGMENT = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)( \[(\d+)\]| #items)?(?: - |$)")


@functools.lru_cache(maxsize=1 << 16)  # every shard orders its keys: names repeat
def column_sort_key(name: str) -> tuple:
    if name == PATH_COLUMN:
        return ((-1, -1),), name
    key = []
    for group, element, suffix, index in _SEGMENT.findall(name):
        tag = int(group + element, 16)
        if suffix == " #items":
            key.append((tag, 0))
        else:
            key.append((tag, int(index) if index else 1))
    return tuple(key), name


def order_columns(names) -> list[str]:
    return sorted(names, key=column_sort_key)
