"""``--format json`` without ``dcmread``: a file's DICOM JSON (PS3.18 Annex F) straight
from its header's bytes, in one pass, for the files the lean header reader has read.

``dicom_json.draft`` walks pydicom's dataset: ``dcmread`` of the header (every element
a ``RawDataElement``, every undefined-length sequence a ``Dataset`` per item), then
each sequence's bytes parsed once more (``flatten.parse_sequence``). Once the lean
reader has accepted a file its header is known to be plain Part 10 (explicit VR little
endian File Meta, a data set in explicit or implicit VR little endian, tags in order,
no value past its item or the file): ``header_draft`` reads those bytes as
``dcmread(stop_before_pixels=True)`` would (PS3.5 7.1 elements, 7.5 sequences and
items, an item switching to implicit VR as pydicom allows, PS3.5 6.2.2) and makes each
element's JSON on the spot, as the pydicom walk makes it:

* values ``json_values`` makes from their bytes; text of the item's character set that
  it declines (non-ASCII, escape sequences) converted by pydicom's own
  ``convert_raw_data_element`` with the encodings pydicom's ``Dataset`` would use (its
  (0008,0005), else its parent's), then as ``dicom_json`` converts any element;
* left out as there: private elements, overlays, the FFFA/FFFC/FFFE groups, pixel data.

Anything else (an element only pydicom's ``Dataset`` can convert: UN, AT, ambiguous VRs,
LUT descriptors, odd person names; a private element of undefined length; an item that
is not an item; ``--include-private`` or ``--tags``; another pydicom configuration):
``None``, and the file's JSON is made by ``dicom_json.draft`` exactly as before.
``tests/test_json_values.py`` checks that every file of pydicom's test set and a
generated archive give the same line either way.
"""

from __future__ import annotations

import functools
import re
import struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from transforms.common import json_text
from transforms.common.rows import CHARSET_TEXT_VRS
from transforms.reading.dicom_json import (
    _ENCODER, PATH_KEY, JsonDraft, _Entry, converted_json, kept_raw)
from transforms.reading.header_syntax import (  # the tags and lengths PS3.5 fixes
    CHARSET, ITEM, ITEM_DELIMITER, PIXEL_REPRESENTATION, PREAMBLE_END, SEQUENCE_DELIMITER,
    STOP_TAGS, TRANSFER_SYNTAX, UNDEFINED,
)
from transforms.reading.json_values import (
    AS_WRITTEN_VRS, VALUE_MAKERS, implicit_vr, numbers_as_written, supported)
from transforms.reading.naming import element_name, is_skipped_group, public_name

# Explicit VR bytes -> (VR, whether its length has 32 bits: PS3.5 Table 7.1-1).
_EXPLICIT = {vr.value.encode(): (vr.value, vr in EXPLICIT_VR_LENGTH_32)
             for vr in VR if len(vr.value) == 2}
# Read as the lean reader reads them; big endian and deflated ones it declines.
_NOT_READ = frozenset({ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})
_TAG_LENGTH = struct.Struct("<HHL").unpack_from
_EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from
_LENGTH = struct.Struct("<L").unpack_from
_ENCODE = _ENCODER.encode
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# The text of short elements seen before, by their bytes (header and value), in
# explicit and in implicit VR: the headers of a series repeat most of theirs (names,
# UIDs, dates, geometry), and a repeated one costs one look-up. Emptied when full.
_PIECES: tuple = ({}, {})
# Never taken from there: elements whose reading does more than give their text.
_NOT_CACHED = frozenset({0x00020010, 0x00080005, 0x00280103})
# The pieces pydicom converted (text of a character set json_values declines), by the
# short element's bytes, its VR encoding, the encodings in force and --max-binary-bytes
# (an element pydicom fails on is kept as binary); emptied when full.
_CONVERTED: dict = {}
CACHED_BYTES = 64
CACHED_PIECES = 1 << 16
# Text whose values json_values makes by stripping the padding these bytes end in and
# splitting at backslashes (_multi: AS CS DA DT TM; _ui: UI, whose values are also
# stripped, so only when there is no space at all): when it is printable ASCII without
# '"' (nothing the encoder escapes) and not empty, its member is written here directly.
_PLAIN_TEXT_VRS = {
    **{vr: re.compile(rb"[\x20\x21\x23-\x7e]+").fullmatch
       for vr in ("AS", "CS", "DA", "DT", "TM")},
    "UI": re.compile(rb"[\x21\x23-\x7e]+").fullmatch,
}


class _Declined(Exception):
    """The file's JSON is ``dicom_json.draft``'s to make."""


def header_draft(data: bytes, settings) -> "TextDraft | None":
    """The JSON draft of the Part 10 header ``data`` (from the file's first byte to
    where the lean reader found its header to end), or None: ``dicom_json.draft``."""
    if settings.include_private or settings.selection or not supported():
        return None
    reader = _Reader(data, settings.max_binary_bytes)
    try:
        return reader.draft()
    except Exception:  # pylint: disable=broad-except  # any doubt: the pydicom walk decides
        return None


class TextDraft:
    """A file's JSON as text: ``pieces``, its top-level ``"GGGGEEEE":{...}`` members in
    key order, each as ``dicom_json``'s encoder writes it (keys sorted, compact): the
    line is them joined, with ``DicomPath`` in its sorted place. The content step's
    ``document`` and ``entries`` (de-identification) are the parsed text, made when
    asked for: ``JsonDraft``'s, the same line once re-encoded (JSON numbers, strings and
    floats read back exactly)."""

    def __init__(self, pieces: list):
        self.pieces = pieces
        self._parsed = None

    def _draft(self) -> JsonDraft:
        if self._parsed is None:
            document = json_text.loads("{" + ",".join(self.pieces) + "}")
            entries: list = []
            _entries(document, "", entries, True)
            self._parsed = JsonDraft(document, entries)
        return self._parsed

    @property
    def document(self) -> dict:
        return self._draft().document

    @property
    def entries(self) -> list:
        return self._draft().entries

    def line(self, path: str) -> str:
        if self._parsed is not None:  # the content step may have changed it
            return self._parsed.line(path)
        pieces = self.pieces
        place = len(pieces)
        while place and pieces[place - 1][1:9] > PATH_KEY:  # keys from "E..." on
            place -= 1
        member = f'"{PATH_KEY}":{_ENCODE(path)}'
        return "{" + ",".join([*pieces[:place], member, *pieces[place:]]) + "}"


def _entries(document: dict, prefix: str, entries: list, top: bool) -> None:
    """``dicom_json``'s entries of a parsed document, in its order: an item's elements
    before their sequence."""
    for key, element in document.items():
        tag = int(key, 16)
        if element["vr"] == "SQ":
            name = prefix + (element_name(BaseTag(tag), None) if top else public_name(tag))
            for index, item in enumerate(element.get("Value", ()), start=1):
                _entries(item, (name if index == 1 else f"{name} [{index}]") + " - ",
                         entries, False)
        entries.append(_Entry(prefix, tag, None, element["vr"], document, key))


class _Reader:
    def __init__(self, data: bytes, max_binary_bytes: int):
        self.data = data
        self.max_binary_bytes = max_binary_bytes
        self.syntax = None  # the File Meta's Transfer Syntax UID

    def draft(self) -> TextDraft:
        data = self.data
        pieces: list = []
        # File Meta (PS3.10 7.1): explicit VR little endian, group 0002 only.
        pos = self._elements(PREAMBLE_END, len(data), False, default_encoding, pieces,
                             meta=True)
        syntax = self.syntax
        if syntax is None or syntax in _NOT_READ:
            raise _Declined("transfer syntax")
        self._elements(pos, len(data), syntax == ImplicitVRLittleEndian,
                       default_encoding, pieces, top=True)
        return TextDraft(pieces)

    def _elements(self, pos: int, end: int | None, implicit: bool, encodings, out: list,
                  meta: bool = False, top: bool = False) -> int:
        """Read elements from ``pos`` up to ``end`` (None: up to an Item Delimitation
        Item), their members into ``out``; the position after them."""
        data, max_binary_bytes, pieces = self.data, self.max_binary_bytes, _PIECES[implicit]
        limit = len(data) if end is None else end
        nested = not (meta or top)
        # parse_sequence's Dataset rule, below (in an implicit VR item every VR is None).
        pixel_representation, raw_vrs = False, implicit
        previous = 0x0002FFFF if top else -1  # members in key order: tags ascending
        while True:
            if pos >= limit:
                if end is None or pos > limit:
                    raise _Declined("runs past its item")
                return pos
            start = pos
            if implicit:
                group, number, length = _TAG_LENGTH(data, pos)
                tag = group << 16 | number
                if tag == ITEM_DELIMITER and end is None:
                    return pos + 8
                vr = implicit_vr(tag)
                pos += 8
            else:
                group, number, vr_bytes, length = _EXPLICIT_HEADER(data, pos)
                tag = group << 16 | number
                if meta and group != 2:
                    return pos
                if tag == ITEM_DELIMITER and end is None:
                    return pos + 8
                vr, long = _EXPLICIT.get(vr_bytes, (None, False))
                if vr is None:
                    raise _Declined("VR")
                if long:
                    length = _LENGTH(data, pos + 8)[0]
                    pos += 12
                else:
                    pos += 8
            key = None
            if length <= CACHED_BYTES:
                key = data[start:pos + length]
                piece = pieces.get(key)
                if piece is not None:
                    if tag <= previous:
                        raise _Declined("tags out of order")
                    previous = tag
                    out.append(piece)
                    pos += length
                    continue
            if top and tag in STOP_TAGS:
                return pos
            if tag <= previous:
                raise _Declined("tags out of order")
            previous = tag
            if vr is None or vr in ("SQ", "UN"):
                raw_vrs = True
            if tag == PIXEL_REPRESENTATION:
                pixel_representation = True
                if length not in (0, 2):
                    raise _Declined("Pixel Representation that may not convert")
            if nested and pixel_representation and raw_vrs:
                # A Dataset converts its Pixel Representation with any of its sequences
                # (flatten.parse_sequence leaves such items to pydicom; so does this).
                raise _Declined("Pixel Representation next to a sequence")
            if group & 1 or group >= 0x6000 and is_skipped_group(group):
                if length == UNDEFINED:
                    raise _Declined("undefined length left out")
                pos += length
                continue
            if vr is None:
                raise _Declined("implicit VR the dictionary does not give")
            if vr == "SQ":
                text, pos = self._sequence(pos, length, implicit, encodings)
                out.append(f'"{tag:08X}":{text}')
                continue
            if length == UNDEFINED:
                raise _Declined("undefined length, not a sequence")
            value = data[pos:pos + length]
            pos += length
            if len(value) < length:
                raise _Declined("runs past the header")
            if tag == CHARSET:
                encodings = _encodings(tag, vr, value, implicit)
            if meta and tag == TRANSFER_SYNTAX:
                self.syntax = value.decode("ascii").rstrip("\0 ")
            cached = key is not None and vr not in _BINARY and tag not in _NOT_CACHED
            if vr in AS_WRITTEN_VRS:
                numbers = numbers_as_written(vr, value)
                if numbers is not None:
                    listed = numbers.replace(b"\\", b",").decode()
                    piece = f'"{tag:08X}":{{"Value":[{listed}],"vr":"{vr}"}}'
                    out.append(piece)
                    if cached:
                        _cache(pieces, key, piece)
                    continue
            plain = _PLAIN_TEXT_VRS.get(vr)
            if plain is not None:
                text = value.rstrip(b" \0")
                if text and plain(text):
                    # Printable ASCII without '"': its JSON string is the text itself.
                    listed = text.decode().replace("\\", '","')
                    piece = f'"{tag:08X}":{{"Value":["{listed}"],"vr":"{vr}"}}'
                    out.append(piece)
                    if cached:
                        _cache(pieces, key, piece)
                    continue
            if not value:
                element = {"vr": vr}
            else:
                maker = VALUE_MAKERS.get(vr)
                element = None if maker is None else maker(vr, value, tag, max_binary_bytes)
                if element is None:
                    # pydicom's conversion, by the item's character set: its piece is
                    # kept by the encodings too (a site's names recur in every file).
                    cached = False
                    converted_key = None if key is None else (
                        key, implicit, max_binary_bytes, encodings
                        if isinstance(encodings, str) else tuple(encodings))
                    piece = _CONVERTED.get(converted_key)
                    if piece is not None:
                        out.append(piece)
                        continue
                    element = self._converted(tag, vr, value, pos - length, implicit,
                                              encodings)
                    if converted_key is not None:
                        _cache(_CONVERTED, converted_key,
                               f'"{tag:08X}":{_ENCODE(element)}')
            piece = f'"{tag:08X}":{_ENCODE(element)}'
            out.append(piece)
            if cached:
                _cache(pieces, key, piece)

    def _converted(self, tag: int, vr: str, value: bytes, tell: int, implicit: bool,
                   encodings) -> dict:
        """Text of the item's character set, converted by pydicom as its ``Dataset``
        converts it (``Dataset.__getitem__``), and any failure kept as there."""
        if vr not in CHARSET_TEXT_VRS:
            raise _Declined("only pydicom's Dataset converts it")
        raw = RawDataElement(BaseTag(tag), None if implicit else vr, len(value), value,
                             tell, implicit, True)
        try:
            return converted_json(convert_raw_data_element(raw, encoding=encodings),
                                  self.max_binary_bytes)
        except Exception:  # pylint: disable=broad-except  # as dicom_json: kept raw
            return kept_raw(raw, self.max_binary_bytes)

    def _sequence(self, pos: int, length: int, implicit: bool, encodings):
        """A sequence's JSON text and the position after it (PS3.5 7.5: items of
        defined or undefined length, in a sequence of defined or undefined length)."""
        data = self.data
        end = None if length == UNDEFINED else pos + length
        items = []
        while True:
            if end is not None and pos >= end:
                if pos > end:
                    raise _Declined("item runs past its sequence")
                break
            group, number, item_length = _TAG_LENGTH(data, pos)
            tag = group << 16 | number
            pos += 8
            if tag == SEQUENCE_DELIMITER and end is None:
                break
            if tag != ITEM:
                raise _Declined("not an item")
            # pydicom's item_is_implicit_vr: an item of an explicit VR data set may be
            # in implicit VR (its first VR bytes not two capitals), never the reverse.
            item_implicit = implicit or len(data) - pos >= 6 and not (
                0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)
            members: list = []
            item_end = None if item_length == UNDEFINED else pos + item_length
            pos = self._elements(pos, item_end, item_implicit, encodings, members)
            items.append("{" + ",".join(members) + "}")
        if not items:
            return '{"vr":"SQ"}', pos
        return '{"Value":[' + ",".join(items) + '],"vr":"SQ"}', pos


def _cache(pieces: dict, key: tuple, piece: str) -> None:
    if len(pieces) >= CACHED_PIECES:
        pieces.clear()
    pieces[key] = piece


@functools.lru_cache(maxsize=256)
def _encodings(tag: int, vr: str, value: bytes, implicit: bool):
    """A data set's encodings from its (0008,0005), as pydicom's ``read_dataset`` (the
    same few values in every file: converted once; pydicom copies the list it is given)."""
    raw = RawDataElement(BaseTag(tag), None if implicit else vr, len(value), value, 0,
                         implicit, True)
    return convert_encodings(convert_raw_data_element(raw).value)
