"""``--format nested``: ``scan.nested.parquet``, one row per file, one column per
top-level element named by its DICOM keyword, sequences as ``list<struct<...>>``.

Built from each row's DICOM JSON (``transforms/reading/dicom_json.py``), so it holds what
the JSON holds: every item of every sequence, de-identified and selected alike.

Schema (``NestedSchema``): the union of every file's elements, per nesting level, ordered
by tag, ``DicomPath`` first; it depends on the set of files only, never on their order or
the workers (the table step reads every row's JSON once to build it, then writes).

* Types by VR as the flat Parquet (``types.py``): DA date32, DT timestamp[us] (no time
  zone), IS/SS/US/SL/UL/SV/UV int64, DS/FL/FD float64, every other text VR string, and
  a list of that type where the dictionary's VM allows several values. Unlike the flat
  Parquet, TM stays DICOM text: Delta Lake and Spark have no time-of-day type, and the
  file must load there as it is. PN is its DICOM text (``Alphabetic=Ideographic=
  Phonetic``), AT ``GGGGEEEE``, binary VRs bytes (null when ``--max-binary-bytes`` left
  the value out). An element read with VRs of different types is a string of its values
  joined with ``\\``. As the Cloud Healthcare API's BigQuery export: keyword names,
  sequences as repeated records, elements without a keyword in ``OtherElements``; unlike
  it, dates, date-times and numbers are typed (it keeps most as text), as our flat
  Parquet does.
* ``OtherElements`` (at every level where there are any): elements without a keyword
  (private ones, group lengths, unknown public tags) as a list of ``{Tag: "GGGGEEEE",
  Creator, VR, Value}``, ``Value`` being the element's PS3.18 JSON (its ``Value`` or
  ``InlineBinary``) as text.
* BigQuery's limits (15 nested levels, 10,000 columns; every other reader allows more):
  a sequence nested deeper than ``MAX_DEPTH``, and then the sequences with the most leaf
  columns until the schema has at most ``MAX_LEAVES``, are kept as a JSON text column
  named ``<Keyword>_json`` (the PS3.18 JSON of its items); the summary lists them as
  ``nested_json_columns``. A value that does not parse as its type is null and counted
  (``nested_unparseable_values``).
"""

from __future__ import annotations

import functools
import re

import pyarrow as pa
from pydicom.datadict import dictionary_VM, keyword_for_tag

from transforms.common import json_text
from transforms.common.collector import collection_paused
from transforms.common.rows import PATH_COLUMN
from transforms.output.types import vr_type

MAX_DEPTH = 15  # BigQuery: nested levels of RECORD columns
MAX_LEAVES = 10_000  # BigQuery: columns in a table, nested fields included
OTHER = "OtherElements"
JSON_SUFFIX = "_json"
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
OTHER_TYPE = pa.list_(pa.struct([("Tag", pa.string()), ("Creator", pa.string()),
                                 ("VR", pa.string()), ("Value", pa.string())]))
# An element's value of numbers only (contours, LUTs, ...: half the bytes of some lines)
# tells the union nothing, and the parse costs by the byte: ``add_texts`` cuts the member
# first. Only a member: in a JSON string a quote is escaped, so no match starts there;
# an empty sequence's cut ``"Value":[],`` adds what it would (its level, no item).
_NUMBERS = re.compile(r'"Value":\[[-+.0-9eE,]*\],')


@functools.lru_cache(maxsize=1 << 14)
def _keyword(key: str) -> str:
    tag = int(key, 16)
    return "" if (tag >> 16) % 2 else keyword_for_tag(tag)


@functools.lru_cache(maxsize=1 << 14)
def _vm(key: str) -> str:
    try:
        return dictionary_VM(int(key, 16))
    except KeyError:
        return ""


class _Level:
    """One nesting level of the union: keyword elements by tag key, and whether any
    element without a keyword was seen."""

    def __init__(self):
        self.vrs: dict[str, set] = {}
        self.items: dict[str, _Level] = {}
        self.other = False

    def add(self, document: dict) -> None:
        # Once per element of every file: no set or level made for a key seen before.
        vrs_of, keyword = self.vrs, _keyword
        for key, element in document.items():
            if len(key) != 8 or not keyword(key):
                self.other = self.other or len(key) == 8
                continue
            vr = element.get("vr", "UN")
            vrs = vrs_of.get(key)
            if vrs is None:
                vrs_of[key] = {vr}
            elif vr not in vrs:
                vrs.add(vr)
            if vr == "SQ":
                level = self.items.get(key)
                if level is None:
                    level = self.items[key] = _Level()
                for item in element.get("Value", ()):
                    level.add(item)

    def merge(self, other: "_Level") -> None:
        self.other = self.other or other.other
        for key, vrs in other.vrs.items():
            self.vrs.setdefault(key, set()).update(vrs)
        for key, level in other.items.items():
            self.items.setdefault(key, _Level()).merge(level)

    def as_data(self) -> dict:
        return {"vrs": {key: sorted(vrs) for key, vrs in sorted(self.vrs.items())},
                "items": {key: level.as_data() for key, level in sorted(self.items.items())},
                "other": self.other}

    @classmethod
    def from_data(cls, data: dict) -> "_Level":
        level = cls()
        level.vrs = {key: set(vrs) for key, vrs in data["vrs"].items()}
        level.items = {key: cls.from_data(item) for key, item in data["items"].items()}
        level.other = bool(data["other"])
        return level


class NestedSchema:
    """The union of documents' elements, and the Arrow schema it gives."""

    def __init__(self):
        self.root = _Level()
        self.as_json: set = set()  # "key/key/..." paths of sequences kept as JSON text

    def add(self, document: dict) -> None:
        self.root.add(document)

    def add_texts(self, texts) -> None:
        """``add`` each JSON text (no garbage collection meanwhile: see
        ``collection_paused``), its arrays of numbers cut first (``_NUMBERS``)."""
        cut, add = _NUMBERS.sub, self.root.add
        with collection_paused():
            for text in texts:
                add(json_text.loads(cut("", text)))

    # As data (plain dicts and lists), so that partial unions travel between workers and
    # combine in any order: the parts of a nested dataset (``nested_parts.py``).
    def as_data(self) -> dict:
        return self.root.as_data()

    @classmethod
    def from_data(cls, data: dict) -> "NestedSchema":
        schema = cls()
        schema.root = _Level.from_data(data)
        return schema

    def merge(self, other: "NestedSchema") -> None:
        self.root.merge(other.root)

    def _type(self, key: str, vrs: set, level: _Level, path: str, depth: int):
        if vrs == {"SQ"}:
            if path in self.as_json:
                return pa.string()
            struct = self._struct(level.items[key], path, depth + 1)
            return pa.list_(struct) if struct.num_fields else None
        if "SQ" in vrs:
            return pa.string()
        if vrs <= BINARY_VRS:
            return pa.binary()
        # PN and AT as text; TM too: Delta Lake and Spark have no time-of-day type.
        types = {vr_type(vr, _vm(key)) if vr not in ("PN", "AT", "TM") else
                 vr_type("LO", _vm(key)) for vr in vrs}
        return types.pop() if len(types) == 1 else pa.string()

    def _struct(self, level: _Level, path: str, depth: int) -> pa.StructType:
        return pa.struct(self._fields(level, path, depth))

    def _fields(self, level: _Level, path: str, depth: int) -> list:
        fields = []
        for key in sorted(level.vrs):
            child = f"{path}/{key}"
            if level.vrs[key] == {"SQ"} and depth > MAX_DEPTH:
                self.as_json.add(child)
            kind = self._type(key, level.vrs[key], level, child, depth)
            if kind is None:
                continue  # a sequence whose items never hold an element
            name = _keyword(key) + (JSON_SUFFIX if child in self.as_json else "")
            fields.append(pa.field(name, kind, metadata={
                "dicom_tag": key, "dicom_vr": "\\".join(sorted(level.vrs[key]))}))
        if level.other:
            fields.append(pa.field(OTHER, OTHER_TYPE))
        return fields

    def arrow_schema(self) -> pa.Schema:
        """``DicomPath``, then the elements by tag; within BigQuery's limits."""
        while True:
            fields = self._fields(self.root, "", 1)
            leaves = sum(_leaves(field.type) for field in fields) + 1
            if leaves <= MAX_LEAVES:
                return pa.schema([pa.field(PATH_COLUMN, pa.string())] + fields)
            sequences = list(_sequences(fields, ""))
            if not sequences:
                return pa.schema([pa.field(PATH_COLUMN, pa.string())] + fields)
            self.as_json.add(max(sequences, key=lambda pair: (pair[1], pair[0]))[0])

    def json_columns(self) -> list[str]:
        return sorted(self.as_json)


def _leaves(kind) -> int:
    if pa.types.is_list(kind):
        return _leaves(kind.value_type)
    if pa.types.is_struct(kind):
        return sum(_leaves(kind.field(i).type) for i in range(kind.num_fields))
    return 1


def _sequences(fields, path: str):
    """``(path, leaves)`` of every sequence field, nested ones too."""
    for field in fields:
        key = (field.metadata or {}).get(b"dicom_tag", b"").decode()
        if key and pa.types.is_list(field.type) and pa.types.is_struct(field.type.value_type):
            child = f"{path}/{key}"
            yield child, _leaves(field.type)
            struct = field.type.value_type
            yield from _sequences([struct.field(i) for i in range(struct.num_fields)], child)
