"""Column types for columnar output: a DICOM column's Arrow type and its value parsers.

Types come from the VR the column was read with:

* DA -> date32, TM -> time64[us], DT -> timestamp[us] (no time zone, see ``parse_dt``)
* IS, SS, US, SL, UL, SV, UV -> int64; DS, FL, FD -> float64
* every other VR -> string, the exact DICOM text also written to the CSV

Multi-valued elements are lists of that type (``list<date32>``, ``list<float64>``,
``list<string>`` ...). Binary VRs and the single-valued text VRs (ST, LT, UT, UR) are
always plain strings: their text is one value (hex, ``<N bytes>`` or free text).

*Which columns are multi-valued* is decided from the column name alone, through the
DICOM data dictionary's Value Multiplicity of the element's tag (pydicom's public and
private dictionaries): list-typed iff the VM allows more than one value. Deciding it from
the data (did any value hold a backslash?) would also be global and deterministic, but
the same column would then change type between two archives, or when one odd file is
added, and that breaks appending runs or comparing them. With the dictionary the type of
``Pixel Spacing`` is ``list<float64>`` in every run, even one whose values are all single.
A value holding more values than its VM allows (a malformed file) does not parse: it
becomes null, is counted, and keeps its text in the CSV. A tag the dictionaries do not
know (unknown public tags, private tags without a known creator) has no known VM: a
typed VR is then a list, because a one-item list holds a single value and a scalar
cannot hold several; a text VR stays a plain string, so no text is split on a guess.

*Widening*: a column read with several VRs (across files, or ambiguous ones such as
``US or SS`` resolved differently) keeps its type only if every VR maps to the same
Arrow type (US and SS are both int64); otherwise it is a string holding the raw text.

The schema is a pure function of the global column list (names and VR sets), which the
global ``ComputeColumns`` combine makes identical for every shard; so shards never
disagree and the same input always gives the same schema.
"""

from __future__ import annotations

import datetime
import re
from functools import lru_cache
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydicom.datadict import dictionary_VM, get_private_entry

from transforms.reading.cells import VALUES_MARKER
from transforms.common.rows import BINARY_VRS, PATH_COLUMN, SINGLE_TEXT_VRS

INT_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
STRING_ONLY_VRS = BINARY_VRS | SINGLE_TEXT_VRS | {"SQ"}
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UNKNOWN_VM = ""

# ---------------------------------------------------------------------------
# Value multiplicity from the column name

# The tag of the column's own element: the last "(gggg,eeee)" (or "... #items").
_LAST_TAG = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)( #items)?$")
# Where one nesting level ends: "(gggg,eeee) - " or "(gggg,eeee) [n] - ".
_LEVEL_END = re.compile(r"\([0-9A-F]{4},[0-9A-F]{4}\)(?: \[\d+\])? - ")


@lru_cache(maxsize=None)
def column_vm(name: str) -> str:
    """The dictionary VM (``"1"``, ``"2"``, ``"1-n"`` ...) of a column, or ``UNKNOWN_VM``."""
    if name == PATH_COLUMN:
        return "1"
    match = _LAST_TAG.search(name)
    if match is None:
        return UNKNOWN_VM
    if match.group(3):  # "<sequence> #items": one count
        return "1"
    group, element = int(match.group(1), 16), int(match.group(2), 16)
    tag = group << 16 | element
    if element == 0:  # group lengths
        return "1"
    if group % 2 == 0:
        try:
            return dictionary_VM(tag)
        except KeyError:
            return UNKNOWN_VM
    # Private: "[creator] description (gggg,eeee)" is the last nesting level.
    levels = _LEVEL_END.split(name[: match.start()])
    own = levels[-1]
    if not own.startswith("["):
        return "1" if element < 0x100 else UNKNOWN_VM  # private creators hold one LO
    # The creator may itself contain "] ", so try each possible end of it.
    for end in [m.start() for m in re.finditer(r"\] ", own)]:
        try:
            return get_private_entry(tag, own[1:end])[1]
        except KeyError:
            continue
    return UNKNOWN_VM


def allows_many(vm: str) -> bool:
    return vm != "1"


# ---------------------------------------------------------------------------
# Arrow types


def _scalar_type(vr: str) -> pa.DataType:
    if vr == "DA":
        return pa.date32()
    if vr == "TM":
        return pa.time64("us")
    if vr == "DT":
        return pa.timestamp("us")
    if vr in INT_VRS:
        return pa.int64()
    if vr in FLOAT_VRS:
        return pa.float64()
    return pa.string()


def vr_type(vr: str, vm: str) -> pa.DataType:
    """The Arrow type of one VR at multiplicity ``vm``."""
    scalar = _scalar_type(vr)
    if vr in STRING_ONLY_VRS:
        return pa.string()
    if vm == UNKNOWN_VM:
        # Typed: a list holds one value or several. Text: never split on a guess.
        return pa.string() if pa.types.is_string(scalar) else pa.list_(scalar)
    return pa.list_(scalar) if allows_many(vm) else scalar


def column_type(name: str, vrs) -> pa.DataType:
    """Arrow type of a column read with ``vrs``: one type, or string when they conflict."""
    if name == PATH_COLUMN:
        return pa.string()
    vm = column_vm(name)
    types = {vr_type(vr, vm) for vr in vrs}
    return types.pop() if len(types) == 1 else pa.string()


def arrow_schema(columns) -> pa.Schema:
    """The schema of the whole table, in the CSV's column order (``DicomPath`` first).

    Each field carries the VRs it was read with and the dictionary VM as metadata.
    """
    names = [column.name for column in columns]
    vrs = {column.name: column.vrs for column in columns}
    if PATH_COLUMN not in vrs:
        names, vrs[PATH_COLUMN] = [PATH_COLUMN] + names, frozenset({"UR"})
    fields = []
    for name in names:
        metadata = {"dicom_vr": "\\".join(sorted(vrs[name])), "dicom_vm": column_vm(name)}
        fields.append(pa.field(name, column_type(name, vrs[name]), metadata=metadata))
    return pa.schema(fields)


# ---------------------------------------------------------------------------
# Parsing DICOM text. Each parser returns the value or raises ValueError.

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})|(\d{4})\.(\d{2})\.(\d{2})")  # legacy YYYY.MM.DD
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{0,6}))?)?)?")
_TM_LEGACY = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{0,6}))?)?")  # HH:MM[:SS[.F]]
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{0,6}))?)?)?)?)?)?"
    r"([+-]\d{4})?"
)
_INT = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BINARY_FLOAT_WORDS = frozenset({"nan", "inf", "-inf"})  # how FL/FD NaN/inf are written


def _micros(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


def parse_da(text: str) -> datetime.date:
    match = _DA.fullmatch(text)
    if match is None:
        raise ValueError(f"not a DA: {text!r}")
    year, month, day = (int(part) for part in match.groups() if part is not None)
    return datetime.date(year, month, day)


def parse_tm(text: str) -> datetime.time:
    """``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.F{0,6}`` (and ACR-NEMA ``HH:MM:SS``).

    A leap second (``SS`` = 60) has no ``time`` value and does not parse.
    """
    match = _TM.fullmatch(text) or _TM_LEGACY.fullmatch(text)
    if match is None:
        raise ValueError(f"not a TM: {text!r}")
    hour, minute, second, fraction = match.groups()
    return datetime.time(int(hour), int(minute or 0), int(second or 0), _micros(fraction))


def parse_dt(text: str) -> datetime.datetime:
    """``YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`` as the local date-time it states.

    The optional UTC offset is checked but not applied: most DT values carry none
    (they are local time, like DA and TM), and shifting only those that do would mix
    two meanings in one column. The CSV keeps the offset.
    """
    match = _DT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a DT: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is not None and (int(offset[1:3]) > 14 or int(offset[3:]) > 59):
        raise ValueError(f"bad UTC offset in DT: {text!r}")
    return datetime.datetime(
        int(year), int(month or 1), int(day or 1),
        int(hour or 0), int(minute or 0), int(second or 0), _micros(fraction),
    )


def parse_int(text: str) -> int:
    if _INT.fullmatch(text) is None:
        raise ValueError(f"not an integer: {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"out of int64 range: {text}")
    return value


def parse_ds(text: str) -> float:
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"not a decimal string: {text!r}")
    return float(text)


def parse_binary_float(text: str) -> float:
    if _DECIMAL.fullmatch(text) is None and text not in _BINARY_FLOAT_WORDS:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


_PARSERS: dict[str, Callable[[str], object]] = {
    "DA": parse_da, "TM": parse_tm, "DT": parse_dt, "DS": parse_ds,
    "FL": parse_binary_float, "FD": parse_binary_float,
    **{vr: parse_int for vr in INT_VRS},
}


def _split(text: str) -> list[str]:
    return text.split("\\")


class ColumnConverter:
    """Converts one column's DICOM texts (``None`` when absent) to an Arrow array.

    ``convert`` returns the array and the number of values that did not parse as the
    column's type (they are null). For a list column a value is a whole cell: if one
    of its items does not parse, the cell is null; empty items (``1\\\\3``) are null items.
    A cell bounded to ``<N values>`` (``transforms/reading/cells.py``) is null and not counted.
    """

    def __init__(self, arrow_type: pa.DataType, vrs):
        self.type = arrow_type
        self.is_list = pa.types.is_list(arrow_type)
        item_type = arrow_type.value_type if self.is_list else arrow_type
        # One VR, or several that map to the same type: any of their parsers fits that
        # type, but the strictest text form (DS over FL/FD) must not reject valid values.
        parsers = {_PARSERS.get(vr) for vr in vrs}
        if pa.types.is_string(item_type) or None in parsers:
            self.parse = None
        elif parsers == {parse_ds, parse_binary_float}:
            self.parse = parse_binary_float
        else:
            self.parse = parsers.pop()

    def convert(self, texts: list) -> tuple[pa.Array, int]:
        if self.parse is None:
            if self.is_list:
                values = [None if text is None else _split(text) for text in texts]
                return pa.array(values, type=self.type), 0
            return pa.array(texts, type=self.type), 0
        parse = self.parse
        cache: dict = {}  # values repeat a lot across files (dates, spacings ...)
        values = []
        bad = 0
        for text in texts:
            if text is None or (text[:1] == "<" and VALUES_MARKER.fullmatch(text)):
                # A bounded cell (transforms/reading/cells.py): null, as documented, not a
                # value that failed to parse.
                values.append(None)
                continue
            try:
                value = cache[text]
            except KeyError:
                try:
                    if self.is_list:
                        value = [parse(item) if item else None for item in _split(text)]
                    else:
                        value = parse(text)
                except (ValueError, OverflowError):
                    value = _BAD
                cache[text] = value
            if value is _BAD:
                bad += 1
                value = None
            values.append(value)
        return pa.array(values, type=self.type), bad

    def convert_arrow(self, values: pa.Array) -> tuple[pa.Array, int] | None:
        """``convert`` of ``values`` (texts, no nulls) by Arrow kernels, for text and
        number columns; None where only ``convert`` knows how (dates, times, non-ASCII
        numbers, values Arrow refuses), and the caller uses ``convert``.

        The same rules: the patterns below are ``_INT`` / ``_DECIMAL`` for ASCII text,
        a cast of a matching text gives Python's ``int`` / ``float`` of it (both round
        correctly; checked by ``tests/test_types_arrow.py``), a bounded cell is null and
        not counted, a list cell with one bad item is null and counted once."""
        values = values.cast(pa.string())
        if self.parse is None:
            if self.is_list:
                return pc.split_pattern(values, "\\").cast(self.type), 0
            return values.cast(self.type), 0
        pattern = _ARROW_PATTERNS.get(self.parse)
        if pattern is None or not pc.all(pc.string_is_ascii(values)).as_py():
            return None
        bounded = pc.match_substring_regex(values, _ARROW_MARKER).to_numpy(zero_copy_only=False)
        items = pc.split_pattern(values, "\\") if self.is_list else values
        flat = pc.list_flatten(items) if self.is_list else items
        valid = pc.match_substring_regex(flat, pattern)
        if self.parse is parse_binary_float:
            valid = pc.or_(valid, pc.is_in(flat, value_set=_ARROW_FLOAT_WORDS))
        present = pc.greater(pc.binary_length(flat), 0)
        failed = pc.and_(present, pc.invert(valid)).to_numpy(zero_copy_only=False)
        if self.parse is parse_int:
            flat = pc.replace_substring_regex(flat, r"^\+", "")  # int("+5"); Arrow refuses it
        item_type = self.type.value_type if self.is_list else self.type
        # Cast the usable texts only, then place them (null elsewhere). Not if_else:
        # pyarrow 18's if_else on a sliced string array reads the wrong bytes.
        usable = np.flatnonzero(pc.and_(present, valid).to_numpy(zero_copy_only=False))
        try:
            parsed = pc.cast(flat.take(pa.array(usable)), item_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # out of range: convert says which values failed
        where = np.full(len(flat), -1, np.int64)
        where[usable] = np.arange(len(usable))
        numbers = parsed.take(pa.array(where, mask=where < 0))
        if not self.is_list:
            return numbers, int((failed & ~bounded).sum())
        parents = pc.list_parent_indices(items).to_numpy()
        bad = (np.bincount(parents[failed], minlength=len(values)) > 0) & ~bounded
        array = pa.ListArray.from_arrays(items.offsets, numbers, type=self.type,
                                         mask=pa.array(bad | bounded))
        return array, int(bad.sum())


_BAD = object()
_ARROW_PATTERNS = {
    parse_int: r"^[+-]?[0-9]+$",
    parse_ds: r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$",
    parse_binary_float: r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$",
}
_ARROW_MARKER = r"^<[0-9]+ values>$"
_ARROW_FLOAT_WORDS = pa.array(sorted(_BINARY_FLOAT_WORDS), pa.string())
