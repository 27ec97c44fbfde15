"""The lean header reader's cells: a column's name (public tags by the dictionary's
keyword, private ones by their creator, PS3.5 7.8.1) and a value's text as ``flatten``
writes it, from the value's bytes: text VRs decoded with the item's character set
(PS3.5 6.1), numbers unpacked little endian (PS3.5 6.2, 7.3), attribute tags as
``(GGGG,EEEE)``, binary values as hex or by their length.

``header_reader._File`` mixes ``CellMaker`` in: its element loop calls these for the
elements it shows.
"""

from __future__ import annotations

import functools
import struct

from pydicom.tag import BaseTag

from transforms.common.private_tags import creator_tag
from transforms.common.rows import NUMBER_FORMATS, NUMBER_SIZES, TEXT_VRS
from transforms.reading.naming import private_element_name, public_name
from transforms.reading.header_syntax import FORMATTED_BINARY_VRS, Decline
from transforms.reading.values import decode_text, format_number


@functools.lru_cache(maxsize=4096)
def _private_name(tag: int, creator: str | None) -> str:
    return private_element_name(BaseTag(tag), creator)


class CellMaker:
    """Names and texts of a ``FileBuffer``'s row (``values``, ``vrs``, ``top_creators``)."""

    def _name(self, tag, private, names, prefix, creators) -> str:
        if not private:
            name = names[tag] = prefix + public_name(tag)
            return name
        return prefix + _private_name(tag, self._creator(tag, creators))

    def _creator(self, tag: int, creators: dict | None) -> str | None:
        if creators is None:
            creators = self.top_creators
        reserving = creator_tag(tag)
        raw = creators.get(reserving) if reserving is not None else None
        if raw is None:
            return None
        text = raw.strip(b" \0")
        if b"\\" in text or not all(0x20 <= byte < 0x7F for byte in text):
            raise Decline("private creator not plain ASCII")
        return text.decode("ascii") or None

    def _value(self, name: str, vr: str, buf: bytes, start: int, length: int, encodings):
        """Text of a non-sequence value of ``length`` > 0 at ``buf[start:]``."""
        if vr in TEXT_VRS:
            text = decode_text(vr, buf[start:start + length], encodings)
            if text:
                self.values[name] = text
                self.vrs[name] = vr
            return
        if vr in FORMATTED_BINARY_VRS:
            if length > self.reader.max_bytes:
                text = f"<{length} bytes>"
            else:
                text = buf[start:start + length].hex()
        elif vr in NUMBER_FORMATS:
            size = NUMBER_SIZES[vr]
            if length % size:
                raise Decline("not a whole number of values")
            numbers = struct.unpack_from(f"<{length // size}{NUMBER_FORMATS[vr]}", buf, start)
            text = "\\".join(format_number(vr, number) for number in numbers)
        elif vr == "AT":
            if length % 4:
                raise Decline("not a whole number of AT values")
            pairs = struct.unpack_from(f"<{length // 2}H", buf, start)
            text = "\\".join(
                f"({pairs[i]:04X},{pairs[i + 1]:04X})" for i in range(0, len(pairs), 2)
            )
        else:
            raise Decline(f"VR {vr}")
        if text:
            self.values[name] = text
            self.vrs[name] = vr

