"""Lean header reader: one pass over a Part 10 file's header bytes straight to its Row.

``transforms.reading.extract`` tries this reader first and falls back to the pydicom path
(``dcmread`` + ``flatten``) whenever it returns ``None``. The row must be exactly the
one the pydicom path gives (``tests/test_header_reader.py`` checks every pydicom test
file and a benchmark archive), so the reader only handles what it can reproduce
exactly and declines everything else.

Read, as ``dcmread(stop_before_pixels=True, defer_size=DEFER_SIZE)`` reads it: the
preamble, the File Meta group (explicit VR little endian), then the dataset in explicit
or implicit VR little endian up to (7FE0,0010)/(7FE0,0009)/(7FE0,0008), recursing into
defined- and undefined-length sequences and items (an item may switch to implicit VR,
as pydicom allows). Skipped without reading their values: private elements (unless
``include_private``), the groups ``flatten`` never shows, and top-level binary values
too long to show; their lengths are still checked against the file size, as
``check_complete`` does.

The names, character sets and value rules are pydicom's (``pydicom.datadict``,
``pydicom.charset``) through the very helpers ``flatten`` uses, so the text is the same.

Here: the element loop (the data set's and every item's, as pydicom's
``data_element_generator``, PS3.5 7.1), inlined for speed, and the sequences and items
it recurses into (PS3.5 7.5). Around it: ``header_syntax`` (the tags, VRs and lengths
PS3.5 fixes), ``header_file`` (the bytes read so far, the PS3.10 File Meta),
``header_cells`` (column names and value texts, as ``flatten`` makes them).

Declined (``None``, the pydicom path decides, errors included): no File Meta, a File
Meta that is not explicit VR little endian, big endian, deflated or private transfer
syntaxes, a command set, the dataset's VR encoding not matching its transfer syntax,
unknown or ambiguous VRs (``US or SS``...), UN elements that would be shown, tags out
of order or repeated, undefined-length values that are not sequences, items that are
not items, values running past their item, sequence or the file, a file ending inside
an element header, a charset-dependent value before (0008,0005), private elements in
implicit VR or private creators that are not plain ASCII (with ``include_private``),
any value that does not format, a pydicom configuration other than its defaults, and
any ``FlattenSettings`` field this reader does not know.
"""

from __future__ import annotations

import dataclasses

from pydicom import config, hooks
from pydicom.hooks import raw_element_vr as default_raw_element_vr
from pydicom.uid import PrivateTransferSyntaxes

from transforms.common.rows import DEFAULT_ENCODING, Row
from transforms.reading.flatten import DEFAULT_ENCODINGS, FlattenSettings
from transforms.reading.header_cells import CellMaker
from transforms.reading.header_file import FileBuffer
from transforms.reading.header_syntax import (
    CHARSET, CHARSET_DECODED, DEFAULT_MULTI, DEFER_SIZE, EXPLICIT_HEADER, EXPLICIT_INFO,
    FORMATTED_BINARY_VRS, IMPLICIT_HEADER, ITEM, ITEM_DELIMITER, LONG_LENGTH,
    PIXEL_REPRESENTATION, PREAMBLE_END, SEQUENCE_DELIMITER, STOP_TAGS, UNDEFINED, Decline,
    NeedMore, encodings_of, implicit_info, short,
)
from transforms.reading.naming import is_skipped_group
from transforms.reading.values import decode_text, join_text

# The FlattenSettings fields this reader implements; any other field means "decline".
# max_values and max_cell_chars are applied to every reader's Row afterwards (transforms/reading/cells.py);
# deferred numeric values, the one place the pydicom path bounds them itself, are declined.
SUPPORTED_SETTINGS = frozenset({
    "include_private", "max_sequence_items", "max_binary_bytes", "max_values", "max_cell_chars",
})


def settings_supported(settings) -> bool:
    """Whether every field of ``settings`` is one this reader implements."""
    if type(settings) is not FlattenSettings:  # pylint: disable=unidiomatic-typecheck
        return False
    names = {field.name for field in dataclasses.fields(settings)}
    # Tag selection (--tags/--exclude-tags) is the pydicom walker's, and the DICOM JSON
    # line (--format json/nested) is made from pydicom's dataset: with either, decline.
    for pydicom_only in ("selection", "dicom_json"):
        if pydicom_only in names:
            if getattr(settings, pydicom_only):
                return False
            names.discard(pydicom_only)
    return names <= SUPPORTED_SETTINGS


def pydicom_defaults() -> bool:
    """The pydicom configuration whose reading rules this reader reproduces."""
    return (
        config.settings.reading_validation_mode != config.RAISE
        and config.data_element_callback is None
        and config.replace_un_with_known_vr
        and config.settings.infer_sq_for_un_vr
        and config.assume_implicit_vr_switch
        and hooks.raw_element_vr is default_raw_element_vr
        and not PrivateTransferSyntaxes
    )


class HeaderReader:
    """``read(stream, path, size)`` -> Row, or None when the pydicom path must read it."""

    def __init__(self, settings: FlattenSettings):
        self.settings = settings
        self.enabled = settings_supported(settings)
        if self.enabled:
            self.include_private = settings.include_private
            self.limit = settings.max_sequence_items
            self.max_bytes = settings.max_binary_bytes
        # Column names of public tags by item prefix: a name depends on nothing else.
        self._names: dict[str, dict[int, str]] = {}

    def read(self, stream, path: str, size: int | None, prefix: bytes) -> Row | None:
        """``stream`` is positioned after ``prefix``, the file's first 132 bytes."""
        # The file read: where its header ended (``end``: the pixel data, or the file's
        # end) and its bytes (``first_bytes``), for the JSON reader.
        self.last_file = None
        if not self.enabled or size is None or not pydicom_defaults():
            return None
        try:
            file = _File(self, stream, path, size, prefix)
            row = file.read()
            self.last_file = file
            return row
        except (Decline, NeedMore):
            return None
        except Exception:  # pylint: disable=broad-except  # any doubt: pydicom decides
            return None

    def names(self, prefix: str) -> dict[int, str]:
        names = self._names.get(prefix)
        if names is None:
            names = self._names[prefix] = {}
        return names



class _File(FileBuffer, CellMaker):
    """One file being read: the data set's elements, from where its File Meta ends."""

    def read(self) -> Row:
        p = self._file_meta(PREAMBLE_END)
        implicit = self._transfer_syntax()
        self._check_first(p, implicit)
        p = self._elements(p, None, implicit, DEFAULT_ENCODINGS, "")
        self.end = self.base + p  # base moves as long values are skipped
        return Row(self.path, self.values, self.vrs)

    def _elements(self, p, item_end, implicit, encodings, prefix, limit=None,
                  undefined=False) -> int:
        """The one element loop, as pydicom's ``data_element_generator`` is one for the
        dataset and its items; returns the offset after the elements.

        ``limit`` None: the top-level dataset, read from the file as needed up to the pixel
        data or the file's end; values not shown are seeked past, long binary ones shown
        by their length, unread. Otherwise the elements of an item inside
        ``buf[:limit]``, up to ``item_end`` (None: its delimiter); ``undefined``: the
        enclosing sequence has no length, so running out asks for more (``NeedMore``).
        ``prefix`` None: an item that is not shown (read only to find its end).
        """
        top = limit is None
        reader = self.reader
        include_private = reader.include_private
        max_bytes = reader.max_bytes
        names = reader.names(prefix) if prefix is not None else None
        values, vrs = self.values, self.vrs
        creators = self.top_creators if top else {}
        last = -1
        pixel_representation = None
        has_sequence = False
        buf = self.buf
        avail = len(buf) if top else limit
        while True:
            if top:
                if p + 12 > avail:
                    if not self._extend(p + 12) and p + 8 > len(self.buf):
                        if p == len(self.buf):
                            break  # end of file
                        raise Decline("file ends inside an element header")
                    buf = self.buf
                    avail = len(buf)
            else:
                if item_end is not None and p >= item_end:
                    if p > item_end:
                        raise Decline("element runs past its item")
                    break
                if p + 8 > avail:
                    short(undefined)
            start = p + 8
            if implicit:
                group, element, length = IMPLICIT_HEADER(buf, p)
            else:
                group, element, vr_bytes, length = EXPLICIT_HEADER(buf, p)
                info = EXPLICIT_INFO.get(vr_bytes)
                if info is not None:
                    vr, long_length, kind = info
                    if long_length:
                        if start + 4 > avail:
                            if top:
                                raise Decline("file ends inside an element header")
                            short(undefined)
                        length = LONG_LENGTH(buf, start)[0]
                        start += 4
                elif top or group != 0xFFFE or element != 0xE00D:
                    raise Decline("unknown VR")
            tag = group << 16 | element
            if tag == ITEM_DELIMITER and not top:
                if item_end is not None:
                    raise Decline("item delimiter in a defined-length item")
                p = start
                break
            private = group & 1
            if tag <= last or group >= 0x6000 and (
                tag in STOP_TAGS or group == 0xFFFE or is_skipped_group(group)
            ):
                if top and tag in STOP_TAGS:
                    break
                if tag <= last or group == 0xFFFE:
                    raise Decline("tag out of order")
                shown = False  # a skipped group
            else:
                shown = prefix is not None and (include_private or not private)
            last = tag
            if implicit:
                if not private:
                    vr, kind = implicit_info(tag)
                elif shown and not top:
                    raise Decline("private element in implicit VR")
                else:
                    vr, kind = "UN", 0
            if length == UNDEFINED:
                p = self._undefined(tag, vr, implicit, start, shown, encodings, private,
                                    names, prefix, creators, limit, undefined)
                if shown:
                    has_sequence = True
                if top:
                    buf = self.buf
                    avail = len(buf)
                continue
            end = start + length
            if not top:
                if end > avail:
                    short(undefined)
                if item_end is not None and end > item_end:
                    raise Decline("element runs past its item")
                if private and element & 0xFF00 == 0 and element >= 0x10:
                    creators[tag] = buf[start:end] if vr == "LO" else b"\\"
            if tag == PIXEL_REPRESENTATION:
                pixel_representation = length
            if not shown or not length:
                if end > avail:  # the top level only: items lie inside their buffer
                    if self.base + end > self.size:
                        raise Decline("file ends inside an element")
                    buf, avail, p = self._skip_to(end)
                else:
                    p = end
                continue
            if private:
                if implicit:
                    raise Decline("private element in implicit VR")
                if top and element & 0xFF00 == 0 and element >= 0x10:  # a private creator
                    if end > avail:
                        buf, avail = self._read_to(end)
                    creators[tag] = buf[start:end] if vr == "LO" else b"\\"
                name = self._name(tag, private, names, prefix, creators)
            else:
                name = names.get(tag)
                if name is None:
                    name = self._name(tag, private, names, prefix, creators)
            if kind:  # text: the common case, inline
                if end > avail:
                    buf, avail = self._read_to(end)
                raw = buf[start:end]
                if tag <= CHARSET:
                    if tag == CHARSET:
                        encodings = encodings_of(raw) or encodings
                    elif kind == CHARSET_DECODED:
                        raise Decline("charset-dependent value before the Specific Character Set")
                if kind == DEFAULT_MULTI and b"\\" not in raw:
                    # join_text of one ISO 8859-1 value: one character per byte, so
                    # stripping the bytes strips the text.
                    text = raw.strip(b" \0").decode(DEFAULT_ENCODING)
                elif kind == CHARSET_DECODED:
                    text = decode_text(vr, raw, encodings)
                else:
                    text = join_text(vr, raw.decode(DEFAULT_ENCODING))
                if text:
                    values[name] = text
                    vrs[name] = vr
                p = end
                continue
            if vr == "UN" or " or " in vr or (top and tag == CHARSET):
                # (a top-level Specific Character Set that is not text: pydicom decides)
                raise Decline("UN or ambiguous VR")
            if top:
                if vr in FORMATTED_BINARY_VRS and (
                    length > max_bytes or (length > DEFER_SIZE and not implicit)
                ):
                    # Not read (the pydicom path defers it, or shows only its length).
                    if self.base + end > self.size:
                        raise Decline("file ends inside an element")
                    values[name] = f"<{length} bytes>"
                    vrs[name] = vr
                    if end > avail:
                        buf, avail, p = self._skip_to(end)
                    else:
                        p = end
                    continue
                if length > DEFER_SIZE and not implicit and vr != "SQ" and (
                    vr not in FORMATTED_BINARY_VRS
                ):
                    raise Decline("deferred non-binary value")  # pydicom keeps it raw
                if end > avail:
                    buf, avail = self._read_to(end)
            elif tag == CHARSET:
                encodings = encodings_of(buf[start:end]) or encodings
            if vr == "SQ":
                has_sequence = True
                self._sequence(start, end, implicit, encodings, name, end if top else limit,
                               undefined)
            else:
                self._value(name, vr, buf, start, length, encodings)
            p = end
        if has_sequence and pixel_representation not in (None, 0, 2):
            # pydicom converts a dataset's Pixel Representation whenever it converts one
            # of its sequences, and a malformed one fails the sequence.
            raise Decline("malformed Pixel Representation next to a sequence")
        return p

    def _undefined(self, tag, vr, implicit, start, shown, encodings, private, names,
                   prefix, creators, limit, undefined) -> int:
        """An undefined-length element: must be a sequence; its end offset. At the top
        level (``limit`` None) the file is read on until the whole sequence is there."""
        if shown and private and implicit:
            raise Decline("private element in implicit VR")
        if vr == "UN" and not shown:
            vr = "SQ"  # pydicom reads undefined-length UN as a sequence
        elif implicit and vr == "UN":
            vr = "SQ" if self._next_is_item(start, limit) else None
        if vr != "SQ":
            raise Decline("undefined-length value that is not a sequence")
        name = None
        if shown:
            name = names.get(tag) if not private else None
            if name is None:
                name = self._name(tag, private, names, prefix, creators)
        if limit is not None:
            return self._sequence(start, None, implicit, encodings, name, limit, undefined)
        while True:
            try:
                return self._sequence(start, None, implicit, encodings, name, len(self.buf),
                                      True)
            except NeedMore:
                # Read twice as much and parse the sequence again (its columns are
                # simply written again).
                before = len(self.buf)
                self._extend(before * 2)
                if len(self.buf) == before:
                    raise Decline("file ends inside a sequence") from None

    def _sequence(self, p, end, implicit, encodings, name, limit, undefined) -> int:
        """Items from ``p`` to ``end`` (None: to the sequence delimiter) inside
        ``buf[:limit]``; returns the end. ``name`` None: read only to find the end."""
        buf = self.buf
        items_shown = self.reader.limit
        count = 0
        while True:
            if end is not None and p >= end:
                if p > end:
                    raise Decline("item runs past its sequence")
                break
            if p + 8 > limit:
                short(undefined)
            group, element, length = IMPLICIT_HEADER(buf, p)
            tag = group << 16 | element
            p += 8
            if tag == SEQUENCE_DELIMITER:
                if end is not None:
                    raise Decline("sequence delimiter in a defined-length sequence")
                break
            if tag != ITEM:
                raise Decline("not an item")
            count += 1
            prefix = None
            if name is not None and (not items_shown or count <= items_shown):
                prefix = (name if count == 1 else f"{name} [{count}]") + " - "
            if length == UNDEFINED:
                item_end = None
            else:
                item_end = p + length
                if item_end > limit:
                    short(undefined)
            item_implicit = implicit
            if not implicit and (item_end is None or item_end > p):
                # pydicom's _is_implicit_vr for an item: implicit unless the VR looks valid.
                if p + 6 > limit:
                    short(undefined)
                item_implicit = not (0x40 < buf[p + 4] < 0x5B and 0x40 < buf[p + 5] < 0x5B)
            p = self._elements(p, item_end, item_implicit, encodings, prefix, limit, undefined)
        if name is not None and items_shown and count > items_shown:
            self.values[f"{name} #items"] = str(count)
            self.vrs[f"{name} #items"] = "IS"
        return p

