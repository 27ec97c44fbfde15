"""The lean header reader's file: the bytes read so far and the Part 10 framing around
the data set (PS3.10 7.1): the 128-byte preamble and "DICM", the File Meta group
(always explicit VR little endian, PS3.10 7.1), its Transfer Syntax UID (PS3.5 10),
and the check, as pydicom's ``_is_implicit_vr``, that the data set's first element is
encoded as that transfer syntax says (PS3.5 7.1.2 explicit VR, 7.1.3 implicit VR).

``header_reader._File`` builds on ``FileBuffer``: its element loop reads the data set
from where ``_file_meta`` stops.
"""

from __future__ import annotations

import struct

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from transforms.common.rows import DEFAULT_ENCODING, PATH_COLUMN
from transforms.reading.flatten import DEFAULT_ENCODINGS
from transforms.reading.naming import public_name
from transforms.reading.header_syntax import (
    EXPLICIT_HEADER, EXPLICIT_VRS, FIRST_READ, LONG_LENGTH, LONG_LENGTH_VRS,
    STOP_TAGS, TRANSFER_SYNTAX, UNDEFINED, Decline,
)


class FileBuffer:
    """One file being read: its buffer and the row being filled (``reader``: the
    ``HeaderReader`` whose settings and column names it uses)."""

    def __init__(self, reader, stream, path: str, size: int, prefix: bytes):
        self.reader = reader
        self.stream = stream
        self.size = size
        self.buf = prefix + stream.read(FIRST_READ - len(prefix))
        self.base = 0  # file offset of buf[0]
        self.values = {PATH_COLUMN: path}
        self.vrs = {PATH_COLUMN: "UR"}
        self.path = path
        self.top_creators: dict = {}  # private creator tag -> its stored bytes

    # -- bytes --------------------------------------------------------------------

    def _extend(self, end: int) -> bool:
        """Read on until ``buf`` holds ``end`` bytes; False if the file ends first."""
        buf = self.buf
        while len(buf) < end:
            chunk = self.stream.read(max(end - len(buf), len(buf)))
            if not chunk:
                self.buf = buf
                return False
            buf += chunk
        self.buf = buf
        return True

    def first_bytes(self, count: int) -> bytes | None:
        """The file's first ``count`` bytes (fewer where it ends), or None when the
        buffer no longer holds them (a long value was seeked past)."""
        if self.base or len(self.buf) < min(count, self.size):
            return None
        return self.buf[:count]

    def _skip_to(self, end: int) -> tuple:
        """Continue at buffer offset ``end`` (past the bytes read), without reading the
        gap; returns the element loop's new ``(buffer, bytes available, position)``."""
        target = self.base + end
        self.stream.seek(target)
        self.base = target
        self.buf = self.stream.read(FIRST_READ)
        return self.buf, len(self.buf), 0

    def _read_to(self, end: int) -> tuple[bytes, int]:
        """The top level: read on until the buffer holds ``end`` bytes; (buffer, length)."""
        if not self._extend(end):
            raise Decline("file ends inside an element")
        return self.buf, len(self.buf)

    def _next_is_item(self, p: int, limit: int | None) -> bool:
        """Whether an Item tag (FFFE,E000) starts at ``p`` (PS3.5 7.5)."""
        if limit is None:
            if p + 4 > len(self.buf) and not self._extend(p + 4):
                return False
        elif p + 4 > limit:
            return False
        return struct.unpack_from("<L", self.buf, p)[0] == (0xE000 << 16 | 0xFFFE)

    # -- File Meta ----------------------------------------------------------------

    def _file_meta(self, p: int) -> int:
        buf = self.buf
        if len(buf) < p + 6 or not (0x40 < buf[p + 4] < 0x5B and 0x40 < buf[p + 5] < 0x5B):
            raise Decline("File Meta not explicit VR")
        names = self.reader.names("")
        last = -1
        self.transfer_syntax = None
        while True:
            if p + 8 > len(buf) and not self._extend(p + 8):
                raise Decline("file ends in the File Meta")
            buf = self.buf
            group, element, vr_bytes, length = EXPLICIT_HEADER(buf, p)
            if group != 2:
                break
            vr = EXPLICIT_VRS.get(vr_bytes)
            if vr is None:
                raise Decline("unknown VR")
            start = p + 8
            if vr in LONG_LENGTH_VRS:
                if start + 4 > len(buf) and not self._extend(start + 4):
                    raise Decline("file ends in the File Meta")
                length = LONG_LENGTH(self.buf, start)[0]
                start += 4
            tag = group << 16 | element
            if tag <= last or length == UNDEFINED or vr == "SQ" or vr == "UN":
                raise Decline("unusual File Meta element")
            last = tag
            end = start + length
            if end > len(self.buf) and not self._extend(end):
                raise Decline("file ends in the File Meta")
            buf = self.buf
            if tag == TRANSFER_SYNTAX:
                self.transfer_syntax = buf[start:end]
            if length:
                name = names.get(tag)
                if name is None:
                    name = names[tag] = public_name(tag)
                self._value(name, vr, buf, start, length, DEFAULT_ENCODINGS)
            p = end
        if last == -1:
            raise Decline("no File Meta")
        return p

    def _transfer_syntax(self) -> bool:
        """True for implicit VR little endian, False for explicit; Decline otherwise."""
        if self.transfer_syntax is None:
            raise Decline("no Transfer Syntax UID")
        uid = self.transfer_syntax.decode(DEFAULT_ENCODING).rstrip("\0 ")
        if "\\" in uid or uid in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
            raise Decline(f"transfer syntax {uid}")
        return uid == ImplicitVRLittleEndian

    def _check_first(self, p: int, implicit: bool) -> None:
        """pydicom's ``_is_implicit_vr``: the dataset's first VR decides its encoding;
        a mismatch with the transfer syntax (or a command set first) is pydicom's call."""
        if p + 8 > len(self.buf) and not self._extend(p + 8):
            return  # at most an empty dataset: the loop decides
        buf = self.buf
        group, element = struct.unpack_from("<HH", buf, p)
        looks_explicit = 0x40 < buf[p + 4] < 0x5B and 0x40 < buf[p + 5] < 0x5B
        if group == 0 or (group << 16 | element) in STOP_TAGS or looks_explicit == implicit:
            raise Decline("VR encoding does not match the transfer syntax")

