"""The rows of ``scan.nested.parquet`` and of the nested dataset's parts: a file's DICOM
JSON as a Python row of the union schema (``nested.py``), for
``pa.RecordBatch.from_pylist``.

Values as ``nested.py`` describes them; one that does not parse as its column's type is
null and counted by column (``NestedRows.unparseable``).
"""

from __future__ import annotations

import base64
import functools
import json
from collections import Counter

import pyarrow as pa

from transforms.common import json_text
from transforms.common.collector import collection_paused
from transforms.common.rows import PATH_COLUMN
from transforms.output.nested import OTHER, NestedSchema, _keyword
from transforms.output.types import parse_da, parse_dt

_PARSERS = {"DA": parse_da, "DT": parse_dt}

# How a field's value is made (``NestedRows``): kept as JSON text, a sequence's items,
# bytes, DICOM text, or parsed values (a list of them, or one).
_AS_JSON, _ITEMS, _BYTES, _TEXT, _LIST, _ONE = range(6)


class NestedRows:
    """Documents -> Python rows of ``schema`` (``pa.RecordBatch.from_pylist``).

    The schema is compiled once into one ``{tag key: (name, how, detail)}`` table per
    nesting level, so a row costs a dict look-up per element, not a pass over the
    level's fields."""

    def __init__(self, schema: pa.Schema, nested: NestedSchema):
        self.schema = schema
        self.as_json = nested.as_json
        self.unparseable: Counter = Counter()
        self.plan = self._compile(list(schema), "")

    def _compile(self, fields, path: str) -> dict:
        plan = {}
        for field in fields:
            key = (field.metadata or {}).get(b"dicom_tag")
            if key is None:
                continue
            key = key.decode()
            kind, child = field.type, f"{path}/{key}"
            if child in self.as_json:
                how, detail = _AS_JSON, None
            elif pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
                struct = kind.value_type
                how, detail = _ITEMS, self._compile(
                    [struct.field(i) for i in range(struct.num_fields)], child)
            elif pa.types.is_binary(kind):
                how, detail = _BYTES, None
            elif pa.types.is_string(kind):
                how, detail = _TEXT, None
            elif pa.types.is_list(kind):
                how, detail = _LIST, kind.value_type
            else:
                how, detail = _ONE, kind
            # The last member: the parser of each VR seen for a one-value column
            # (``_ONE``), filled as rows meet them.
            plan[key] = (field.name, how, detail, _Parsers(detail))
        return plan

    def row(self, path: str, document: dict) -> dict:
        row = self._struct(document, self.plan)
        row[PATH_COLUMN] = path
        return row

    def batch(self, paths: list, texts: list) -> pa.RecordBatch:
        """The rows of the JSON ``texts`` as one batch of ``schema`` (no garbage
        collection while they are built: see ``collection_paused``)."""
        with collection_paused():
            rows = [self.row(path, json_text.loads(text)) for path, text in zip(paths, texts)]
            return pa.RecordBatch.from_pylist(rows, schema=self.schema)

    def _struct(self, document: dict, plan: dict) -> dict:
        out: dict = {}
        others = []
        # A line's keys are sorted (dicom_json's encoder; json_reader's members in tag
        # order), and the parse keeps their order: no sort per item.
        for key, element in document.items():
            entry = plan.get(key)  # only tag keys are in a plan
            if entry is None:
                if len(key) == 8 and not _keyword(key):
                    others.append(self._other(key, element, document))
                continue
            name, how = entry[0], entry[1]
            # The common cases made here as _value makes them, without its call and its
            # tests: a sequence's items; text values, all str (no PN: its values are
            # dicts); one or several values that all parse. Anything else (None among
            # the values, a value that does not parse) is _value's, from the start.
            if how == _ITEMS:
                values = element.get("Value")
                out[name] = [self._struct(item, entry[2]) for item in values] if values else []
                continue
            values = element.get("Value")
            if values:
                if how == _TEXT:
                    if element.get("vr") != "PN":
                        try:
                            out[name] = values[0] if len(values) == 1 and \
                                values[0].__class__ is str else "\\".join(values)
                            continue
                        except TypeError:
                            pass
                elif how == _ONE or how == _LIST:
                    try:
                        parse = entry[3][element.get("vr")]
                        if how == _LIST:
                            out[name] = list(map(parse, values))
                            continue
                        if len(values) == 1 and values[0] is not None:
                            out[name] = parse(values[0])
                            continue
                    except Exception:  # pylint: disable=broad-except  # _value decides
                        pass
            out[name] = self._value(element, name, how, entry[2])
        if others:
            out[OTHER] = others
        return out

    @staticmethod
    def _other(key: str, element: dict, document: dict) -> dict:
        tag = int(key, 16)
        creator = None
        if (tag >> 16) % 2 and (tag & 0xFFFF) >= 0x1000:
            owner = document.get(f"{tag >> 16:04X}00{(tag >> 8) & 0xFF:02X}", {})
            creator = (owner.get("Value") or [None])[0]
        value = element.get("Value", element.get("InlineBinary"))
        return {"Tag": key, "Creator": creator, "VR": element.get("vr"),
                "Value": None if value is None else json.dumps(value, ensure_ascii=False,
                                                               sort_keys=True)}

    def _value(self, element: dict, name: str, how: int, detail):
        values = element.get("Value")
        if how == _AS_JSON:
            return None if values is None else json.dumps(values, ensure_ascii=False,
                                                          sort_keys=True)
        if how == _ITEMS:
            return [self._struct(item, detail) for item in values or ()]
        if how == _BYTES:
            inline = element.get("InlineBinary")
            return None if inline is None else base64.b64decode(inline)
        if values is None:
            if "StoredText" in element:
                self.unparseable[name] += 1
            return None
        vr = element.get("vr")
        if how == _TEXT:
            if vr != "PN":  # _text of any other value: str(value)
                return "\\".join(["" if value is None else str(value) for value in values])
            return "\\".join(["" if text is None else text
                               for text in [_text(vr, value) for value in values]])
        parse = _parser(detail, vr)
        try:
            parsed = [None if value is None else parse(value) for value in values]
        except (ValueError, OverflowError, TypeError):
            self.unparseable[name] += 1
            return None
        if how == _LIST:
            return parsed
        if len(parsed) != 1:
            self.unparseable[name] += 1
            return None
        return parsed[0]


def unparseable_figures(counts) -> dict:
    """The summary's figures of the values that did not parse, from the ``unparseable``
    counts (as dicts) of every converter of a run, in any order."""
    total: Counter = Counter()
    for by_column in counts:
        total.update(by_column)
    return {"nested_unparseable_values": sum(total.values()),
            "nested_unparseable_by_column": dict(sorted(total.items()))}

def _text(vr: str, value):
    if value is None:
        return None
    if vr == "PN":
        return "=".join(value.get(part, "") for part in
                        ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    return str(value)


def _parse_int(value) -> int:
    number = int(value)
    if number != value or not -(1 << 63) <= number < (1 << 63):
        raise ValueError(value)
    return number


class _Parsers(dict):
    """``{vr: _parser(kind, vr)}``, each made when first asked for."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def __missing__(self, vr):
        if not isinstance(self.kind, pa.DataType):
            raise KeyError(vr)
        parse = self[vr] = _parser(self.kind, vr)
        return parse


@functools.lru_cache(maxsize=1024)
def _parser(kind: pa.DataType, vr: str):
    """The function that parses one JSON value of ``vr`` as ``kind``."""
    if vr in _PARSERS:
        parse = _PARSERS[vr]
        return lambda value: parse(value.strip())
    if pa.types.is_integer(kind):
        return _parse_int
    if pa.types.is_floating(kind):
        return float
    return lambda value: _text(vr, value)
