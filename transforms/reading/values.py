"""A header element's value as text, in DICOM's own text form.

* Text VRs: the stored text decoded with the item's Specific Character Set, multiple
  values joined with ``\\`` (DS/IS keep their text exactly as stored, PN is DICOM text,
  empty trailing groups included: ``A^B=`` stays ``A^B=``).
* Binary numbers (US, SS, UL, SL, UV, SV, FL, FD): decimal, joined with ``\\``.
* AT: ``(gggg,eeee)``.
* OB, OD, OF, OL, OV, OW, UN: up to ``max_binary_bytes`` as hex, longer ones as ``<N bytes>``
  (N is the bytes present; deferred values, never read, count their declared length).

Two paths produce that text. The fast path (``format_raw``) works on pydicom's
RawDataElement bytes, which is what a lazily read header holds; the reference path
(``format_converted``) formats pydicom's converted values. Both must give the same text
(``tests/test_value_paths.py`` checks it on every pydicom test file). An element that
neither path can convert keeps its raw bytes as text (``raw_bytes_text``) instead of
losing the file. The lean reader (``header_reader``) formats with the same helpers.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.charset import decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import TEXT_VR_DELIMS

from transforms.common.rows import (
    BINARY_VRS, BULK_DATA_TEXT, CHARSET_TEXT_VRS, DEFAULT_ENCODING, NUMBER_FORMATS,
    NUMBER_SIZES, SINGLE_TEXT_VRS, TEXT_VRS, BulkData,
)
from transforms.reading.naming import tag_text


# Shared by both paths


def join_text(vr: str, text: str) -> str:
    """Canonical text of a decoded text value (one or several ``\\``-separated)."""
    if vr in SINGLE_TEXT_VRS:
        return text.rstrip(" \0")
    if "\\" not in text:  # one value: the common case
        return text.strip(" \0")
    unpadded = text.rstrip(" \0")
    if " " not in unpadded and "\0" not in unpadded:
        # Nothing to strip inside (long number lists, mostly): the parts joined again are
        # the text without its padding, or nothing if they are all empty.
        return unpadded if unpadded.strip("\\") else ""
    parts = [part.strip(" \0") for part in text.split("\\")]
    if not any(parts):
        return ""
    return "\\".join(parts)


def format_binary(raw: bytes | None, length: int, max_bytes: int) -> str:
    if length == 0:
        return ""
    if raw is None or length > max_bytes:
        return f"<{length} bytes>"
    return raw.hex()


def format_float32(value: float) -> str:
    return str(np.float32(value))


def format_float64(value: float) -> str:
    return repr(float(value))


def format_number(vr: str, value) -> str:
    if vr == "FL":
        return format_float32(value)
    if vr in ("FD", "OD", "OF"):
        return format_float64(value)
    return str(int(value))


def raw_bytes_text(raw: bytes | None, length: int, max_bytes: int) -> str:
    """Last resort for an element that cannot be converted: its bytes as text."""
    if raw is None:
        return f"<{length} bytes>"
    try:
        text = raw.decode("ascii").strip(" \0")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return format_binary(raw, length, max_bytes)


# Fast path: raw bytes -> text


def decode_text(vr: str, raw: bytes, encodings: list[str]) -> str:
    if vr in CHARSET_TEXT_VRS:
        if vr == "PN":
            raw = raw.rstrip(b"\x00 ")
        text = None
        if b"\x1b" not in raw:
            # decode_bytes' own shortcut without escape sequences: the first encoding,
            # strictly. Whatever it would warn about and replace (or raise on), it does
            # itself below. Most files say ISO_IR 100 or 192: no call, no re-check.
            try:
                text = raw.decode(encodings[0])
            except (LookupError, UnicodeError):
                pass
        if text is None:
            text = decode_bytes(raw, encodings, TEXT_VR_DELIMS)
        if vr not in SINGLE_TEXT_VRS and "\\" not in text:
            return text.strip(" \0")  # join_text of one value: the common case
    else:
        text = raw.decode(DEFAULT_ENCODING)
    return join_text(vr, text)


def format_raw(vr: str, raw: RawDataElement, encodings: list[str], max_bytes: int) -> str:
    """Text of a raw element's bytes for a non-sequence ``vr``."""
    value = raw.value
    if vr in TEXT_VRS:
        return decode_text(vr, value, encodings) if value else ""
    if vr in BINARY_VRS:
        return format_binary(value, raw.length if value is None else len(value), max_bytes)
    endian = "<" if raw.is_little_endian else ">"
    if vr in NUMBER_FORMATS:
        code = NUMBER_FORMATS[vr]
        size = NUMBER_SIZES[vr]
        if value is None:  # deferred and not read (see transforms/reading/cells.py)
            return f"<{raw.length // size} values>"
        if len(value) % size:
            raise ValueError(f"{len(value)} bytes is not a whole number of {vr} values")
        numbers = struct.unpack(f"{endian}{len(value) // size}{code}", value)
        return "\\".join(format_number(vr, n) for n in numbers)
    if vr == "AT":
        if len(value) % 4:
            raise ValueError(f"{len(value)} bytes is not a whole number of AT values")
        pairs = struct.unpack(f"{endian}{len(value) // 2}H", value)
        return "\\".join(
            f"({pairs[i]:04X},{pairs[i + 1]:04X})" for i in range(0, len(pairs), 2)
        )
    raise ValueError(f"unsupported VR {vr!r}")


# Reference path: pydicom's converted value -> text


def format_converted(elem: DataElement, max_bytes: int) -> str:
    vr, value = elem.VR, elem.value
    if isinstance(value, BulkData):  # left out by a DICOMweb server
        return BULK_DATA_TEXT
    if value is None or value == "" or value == b"":
        return ""
    if vr in BINARY_VRS or isinstance(value, (bytes, bytearray)):
        return format_binary(bytes(value), len(value), max_bytes)
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if vr == "AT":
        return "\\".join(tag_text(Tag(v)) for v in values)
    if vr in NUMBER_FORMATS:
        return "\\".join(format_number(vr, v) for v in values)
    if vr in TEXT_VRS:
        return join_text(vr, "\\".join(_converted_text(v) for v in values))
    return "\\".join(str(v) for v in values)


def _converted_text(value) -> str:
    original = getattr(value, "original_string", None)  # DS/IS keep their stored text
    if isinstance(original, str):
        return original
    return str(value)
