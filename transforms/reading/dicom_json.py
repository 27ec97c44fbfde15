"""``--format json``: each file's header as the DICOM JSON Model (PS3.18 Annex F), one
line per file, made while the file is read.

Each element is as pydicom's own ``DataElement.to_json_dict`` makes it (keys
``GGGGEEEE``, ``vr``, ``Value``, person names as ``Alphabetic``/``Ideographic``/
``Phonetic``, AT as ``GGGGEEEE``, binary as base64 ``InlineBinary``): the common values
straight from their bytes (``json_values``; sequences read as ``flatten`` reads them),
any other by pydicom (``tests/test_json_values.py`` checks both agree). This module
decides which elements go in, by the rules the table follows:

* File Meta and data set at the top level, every item of every sequence (no item cut:
  ``--max-sequence-items`` is the table's width limit, not the JSON's);
* left out as in the table: pixel data (never read), overlays (60xx), the
  FFFA/FFFC/FFFE groups, private elements unless ``--include-private``, and whatever
  ``--tags``/``--exclude-tags`` leave out;
* binary values longer than ``--max-binary-bytes`` are left out: the element keeps its
  ``vr`` and, instead of a value, ``"LeftOutBytes": N`` (its length; not a PS3.18 key,
  which readers such as pydicom's ``Dataset.from_json`` ignore: they see no value);
* an IS or DS whose text is not a number (PS3.18 writes them as JSON numbers) keeps
  its ``vr`` and, instead of a value, ``"StoredText": "<the text>"``;
* an element pydicom cannot convert keeps its stored bytes as ``"vr": "UN"`` binary;
* the file's path is the top-level key ``"DicomPath"`` (the table's ``DicomPath``, so a
  pseudonym with ``--pseudonymize-paths``); drop it before ``Dataset.from_json``.

De-identification applies to the JSON as to the row (``apply_content``): every element
is judged as the column of the same tag path (``Referenced Image Sequence (0008,1140)
[2] - ...``) by the same ``RowContent`` step, and its value is removed or replaced as
that column's text would be; a sequence whose own action removes it goes whole.

Keys are sorted and the text is compact UTF-8, so a file always gives the same line.
The line travels with the row through the shards as the cell ``JSON_COLUMN``, which is
no table column (``transforms/output/tables.py`` writes it to ``scan.jsonl`` in
``DicomPath`` order).
"""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag

from transforms.common.rows import BINARY_VRS, JSON_COLUMN, PATH_COLUMN, Row
from transforms.content.selection import SKIPPED
from transforms.reading.flatten import (
    _ParsedSequence, _pixel_representation_converts, element_name, is_skipped_group,
    parse_sequence)
from transforms.reading.json_values import LEFT_OUT_KEY, element_json, implicit_vr, supported
from transforms.reading.naming import public_name

PATH_KEY = PATH_COLUMN
STORED_TEXT_KEY = "StoredText"
SEQUENCE_COUNT = " #items"  # the name of a sequence's own judgement (as the table's count)
# Sorted keys, compact, UTF-8; made once (no per-line set-up; a draft has no cycles).
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                            check_circular=False)
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "IS", "DS"})


class _Entry(NamedTuple):
    """One element of the JSON, and where it sits; its column name and text are only
    made when the content step judges them (most runs never do)."""

    prefix: str
    tag: int
    dataset: object
    vr: str
    parent: dict
    key: str

    @property
    def name(self) -> str:
        name = self.prefix + element_name(BaseTag(self.tag), self.dataset)
        return name + SEQUENCE_COUNT if self.vr == "SQ" else name

    def text(self) -> str:
        element = self.parent[self.key]
        if self.vr == "SQ":
            return str(len(element.get("Value", [])))
        return _text(element, self.vr)


class JsonDraft:
    """A file's JSON before the content step: the dict, and its elements by column name."""

    def __init__(self, document: dict, entries: list):
        self.document = document
        self.entries = entries

    def line(self, path: str) -> str:
        """The JSON line, with ``path`` as its ``DicomPath``."""
        document = dict(self.document)
        document[PATH_KEY] = path
        return _ENCODER.encode(document)


def _binary_vr(vr: str | None, tag: int) -> bool:
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return True  # implicit VR, unknown tag: pydicom reads it as UN
    return vr in BINARY_VRS or vr in ("OB or OW", "US or OW", "US or SS or OW")


def _joined(value) -> str:
    parts = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return "\\".join(str(part) for part in parts)


def _not_numbers(value) -> bool:
    parts = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return any(isinstance(part, str) for part in parts)


def _text(element: dict, vr: str) -> str:
    """The element's value as the table's text, for the de-identification judgement."""
    values = element.get("Value")
    if STORED_TEXT_KEY in element:
        return element[STORED_TEXT_KEY]
    if values is None:
        return "<binary>" if (LEFT_OUT_KEY in element or "InlineBinary" in element) else ""
    if vr == "PN":
        return "\\".join(
            "=".join(part.get(key, "") for key in ("Alphabetic", "Ideographic", "Phonetic"))
            .rstrip("=") for part in values)
    return "\\".join("" if value is None else str(value) for value in values)


class _Unparsed(Exception):
    """An element of a parsed sequence that only pydicom's conversion can make."""


class _Walker:
    def __init__(self, max_binary_bytes: int, include_private: bool, fast: bool):
        self.max_binary_bytes = max_binary_bytes
        self.include_private = include_private
        self.fast = fast  # values from their bytes where json_values can (else pydicom's)
        self.entries: list[_Entry] = []

    def walk(self, dataset, selector, prefix: str, into: dict) -> None:
        include_private = self.include_private
        # items(): the elements as stored, without get_item's per-tag look-up; a
        # deferred one is read (and converted) by get_item, as before.
        for tag, raw in list(dataset.items()):
            group = tag >> 16
            if group & 1 and not include_private or group >= 0x6000 and is_skipped_group(group):
                continue
            tag = BaseTag(tag)
            below = None
            if selector is not None:
                below = selector.select(tag, dataset)
                if below is SKIPPED:
                    continue
            key = f"{tag:08X}"
            if raw.__class__ is not RawDataElement or raw.value is None:
                raw = dataset.get_item(tag)
            if (isinstance(raw, RawDataElement) and raw.value is None
                    and raw.length != 0xFFFFFFFF and raw.length > self.max_binary_bytes
                    and _binary_vr(raw.VR, tag)):
                # Deferred and too long: never read.
                element = {"vr": raw.VR or "UN", LEFT_OUT_KEY: raw.length}
            else:
                element = None
                if self.fast and isinstance(raw, RawDataElement):
                    if (raw.VR or implicit_vr(tag)) == "SQ":
                        if selector is None:
                            element = self._parsed(dataset, tag, raw, prefix)
                    else:
                        element = element_json(raw, tag, self.max_binary_bytes)
                if element is None:
                    element = self._element(dataset, tag, raw, below, prefix)
            into[key] = element
            self.entries.append(_Entry(prefix, tag, dataset, element["vr"], into, key))

    def _parsed(self, dataset, tag: BaseTag, raw, prefix: str) -> dict | None:
        """A sequence read as ``flatten`` reads it (items as dicts of raw elements, no
        pydicom ``Dataset``), when each of its elements is one ``element_json`` makes;
        None: pydicom converts it."""
        parsed = parse_sequence(raw, self.include_private)
        if parsed is None or not _pixel_representation_converts(dataset):
            return None
        judged = len(self.entries)
        try:
            return self._items(parsed, prefix + element_name(tag, dataset))
        except _Unparsed:
            del self.entries[judged:]
            return None

    def _items(self, sequence: _ParsedSequence, name: str) -> dict:
        include_private, entries = self.include_private, self.entries
        items = []
        for index, item in enumerate(sequence.items, start=1):
            document: dict = {}
            item_prefix = (name if index == 1 else f"{name} [{index}]") + " - "
            for tag, raw in item.items():
                group = tag >> 16
                if group & 1 and not include_private or group >= 0x6000 and is_skipped_group(group):
                    continue
                if isinstance(raw, _ParsedSequence):
                    element = self._items(raw, item_prefix + public_name(tag))
                else:
                    element = element_json(raw, tag, self.max_binary_bytes)
                    if element is None:
                        raise _Unparsed()
                key = f"{tag:08X}"
                document[key] = element
                entries.append(_Entry(item_prefix, tag, item, element["vr"], document, key))
            items.append(document)
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}

    def _element(self, dataset, tag: BaseTag, raw, below, prefix: str) -> dict:
        try:
            elem = dataset[tag]
            if elem.VR == "SQ":
                name = prefix + element_name(tag, dataset)
                items = []
                for index, item in enumerate(elem.value, start=1):
                    document: dict = {}
                    item_name = name if index == 1 else f"{name} [{index}]"
                    self.walk(item, below, item_name + " - ", document)
                    items.append(document)
                return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            return converted_json(elem, self.max_binary_bytes)
        except Exception:  # pylint: disable=broad-except  # a value pydicom cannot convert
            return kept_raw(raw, self.max_binary_bytes)


def converted_json(elem, max_binary_bytes: int) -> dict:
    """A non-sequence element pydicom converted, as the JSON holds it."""
    if elem.VR in BINARY_VRS and not elem.is_empty and len(elem.value) > max_binary_bytes:
        return {"vr": elem.VR, LEFT_OUT_KEY: len(elem.value)}
    if elem.VR in ("IS", "DS") and not elem.is_empty and _not_numbers(elem.value):
        # PS3.18 writes IS and DS as JSON numbers: a text that is none has no
        # form there (and pydicom reads none back), so it is kept aside.
        return {"vr": elem.VR, STORED_TEXT_KEY: _joined(elem.value)}
    return elem.to_json_dict(None, 0)


def kept_raw(raw, max_binary_bytes: int) -> dict:
    """An element pydicom cannot convert: its stored bytes, as UN binary."""
    stored = getattr(raw, "value", None)
    if not isinstance(stored, bytes) and raw is not None and not isinstance(
            getattr(raw, "value", None), (bytes, type(None))):
        # Converted earlier by the flattener: its text as stored (ASCII VRs).
        stored = _joined(raw.value).encode("ascii", "replace")
    if not isinstance(stored, bytes):
        return {"vr": "UN"}
    if len(stored) > max_binary_bytes:
        return {"vr": "UN", LEFT_OUT_KEY: len(stored)}
    return {"vr": "UN", "InlineBinary": base64.b64encode(stored).decode("ascii")}


def draft(dataset, settings, reference: bool = False) -> JsonDraft:
    """The JSON of ``dataset`` (its File Meta first) under ``settings``
    (``FlattenSettings``); read while the file is open (deferred values are read).
    ``reference=True`` converts every element with pydicom (``json_values`` makes the
    common ones from their bytes): slower, there for the test that both agree."""
    walker = _Walker(settings.max_binary_bytes, settings.include_private,
                     not reference and supported())
    document: dict = {}
    selector = settings.selection.root() if settings.selection else None
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None:
        walker.walk(file_meta, selector, "", document)
    walker.walk(dataset, selector, "", document)
    return JsonDraft(document, walker.entries)


def _value(vr: str, text: str) -> list:
    """A de-identified column text back as a JSON ``Value``."""
    parts = text.split("\\")
    if vr == "PN":
        names = []
        for part in parts:
            components = part.split("=")
            names.append({key: value for key, value in
                          zip(("Alphabetic", "Ideographic", "Phonetic"), components) if value})
        return names
    if vr in NUMBER_VRS:
        return [float(part) if vr in ("FL", "FD", "DS") else int(part) for part in parts]
    return parts


def _deidentify(draft_: JsonDraft, row: Row, content) -> None:
    """Apply to the draft what ``content`` does to the row of the same elements."""
    judged = Row(row.path, {PATH_COLUMN: row.values[PATH_COLUMN]}, {PATH_COLUMN: "UR"})
    judgements = [(entry, entry.name, entry.text()) for entry in draft_.entries]
    for entry, name, text in judgements:
        judged.values[name] = text
        judged.vrs[name] = "IS" if entry.vr == "SQ" else entry.vr
    kept = content.apply(judged).values
    for entry, name, text in reversed(judgements):  # items before their sequence
        if entry.key not in entry.parent:
            continue
        if name not in kept:
            del entry.parent[entry.key]
        elif entry.vr != "SQ" and kept[name] != text:
            element = entry.parent[entry.key]
            for key in (LEFT_OUT_KEY, STORED_TEXT_KEY, "InlineBinary"):
                element.pop(key, None)
            element["Value"] = _value(entry.vr, kept[name])


def apply_content(row, content):
    """The content step of extraction (``RowContent.apply``, when there is one), for the
    row and its JSON draft alike; the draft becomes the row's ``JSON_COLUMN`` text."""
    pending = row.values.pop(JSON_COLUMN, None) if isinstance(row, Row) else None
    if pending is not None:
        row.vrs.pop(JSON_COLUMN, None)
    active = content is not None and getattr(content, "active", True)
    if content is not None:
        row = content.apply(row)
    if pending is None:
        return row
    if active:
        _deidentify(pending, row, content)
    row.values[JSON_COLUMN] = pending.line(row.values.get(PATH_COLUMN, row.path))
    row.vrs[JSON_COLUMN] = "JSON"
    return row
