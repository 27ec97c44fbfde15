"""The PS3.5 / PS3.10 facts the lean header reader works from, byte by byte: where the
data set starts (a 128-byte preamble and "DICM", PS3.10 7.1), the tags of items, their
delimiters and the pixel data (PS3.5 7.5, 7.6), the explicit VRs and which of them have
a 32-bit length (PS3.5 7.1.2, Table 7.1-1), the implicit VR the dictionary gives a tag
(PS3.5 Annex A), what a (0008,0005) value names as encodings (PS3.5 6.1.2.5), and the
two ways a read stops short (``Decline``: the pydicom path reads the file;
``NeedMore``: read more of it). ``json_reader`` takes the same tags and lengths from here.
"""

from __future__ import annotations

import functools
import struct

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from transforms.common.rows import BINARY_VRS, CHARSET_TEXT_VRS, DEFAULT_ENCODING, SINGLE_TEXT_VRS, TEXT_VRS

# Same threshold as extraction's dcmread: top-level values longer than this are not read.
DEFER_SIZE = 4096
# First read, prefix included: ranged.FIRST_BLOCK, so a short header costs a bucket
# reader one request.
FIRST_READ = 16384

PREAMBLE_END = 132  # 128-byte preamble + "DICM"
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
CHARSET = 0x00080005
TRANSFER_SYNTAX = 0x00020010
PIXEL_REPRESENTATION = 0x00280103
STOP_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # stop_before_pixels

EXPLICIT_VRS = {vr.value.encode(): vr.value for vr in VR if len(vr.value) == 2}
LONG_LENGTH_VRS = frozenset(vr.value for vr in EXPLICIT_VR_LENGTH_32)
FORMATTED_BINARY_VRS = BINARY_VRS - {"UN"}
# Text VRs by how their text is made, so the hot loops test one small int (0: not text).
# DEFAULT_MULTI: default character set, several values (AE AS CS DA DS DT IS TM UI);
# DEFAULT_SINGLE: UR; CHARSET: decoded with the item's Specific Character Set.
DEFAULT_MULTI, DEFAULT_SINGLE, CHARSET_DECODED = 1, 2, 3
TEXT_KINDS = {
    vr: CHARSET_DECODED if vr in CHARSET_TEXT_VRS
    else DEFAULT_SINGLE if vr in SINGLE_TEXT_VRS else DEFAULT_MULTI
    for vr in TEXT_VRS
}
# Explicit VR bytes -> (VR, has a 32-bit length, text kind): one look-up per element.
EXPLICIT_INFO = {
    raw: (vr, vr in LONG_LENGTH_VRS, TEXT_KINDS.get(vr, 0)) for raw, vr in EXPLICIT_VRS.items()
}

IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from
EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from
LONG_LENGTH = struct.Struct("<L").unpack_from


class Decline(Exception):
    """The pydicom path must read this file."""


class NeedMore(Exception):
    """An undefined-length sequence runs past the bytes read so far."""


def short(undefined: bool):
    """Bytes run out inside a sequence: more of the file (an undefined-length one), or
    a value running past its sequence."""
    if undefined:
        raise NeedMore()
    raise Decline("value runs past its sequence")


@functools.lru_cache(maxsize=1 << 14)
def implicit_vr(tag: int) -> str | None:
    """The VR pydicom gives a public implicit-VR element (``raw_element_vr``)."""
    try:
        return dictionary_VR(BaseTag(tag))
    except KeyError:
        return "UL" if tag & 0xFFFF == 0 else "UN"


@functools.lru_cache(maxsize=1 << 14)
def implicit_info(tag: int) -> tuple[str | None, int]:
    """``implicit_vr`` and its text kind."""
    vr = implicit_vr(tag)
    return vr, TEXT_KINDS.get(vr, 0)


@functools.lru_cache(maxsize=256)
def encodings_of(raw: bytes) -> list[str] | None:
    """Encodings named by a (0008,0005) value, as ``flatten`` derives them; None: inherit."""
    terms = [term.strip(" \0") for term in raw.decode(DEFAULT_ENCODING).split("\\")]
    if not any(terms):
        return None
    return convert_encodings(terms if len(terms) > 1 else terms[0])

