"""One instance's DICOM JSON (PS3.18 Annex F, from a WADO-RS metadata request) -> its
row, as the flattener makes a file's.

The reference conversion (``pydicom_row``): ``pydicom.Dataset.from_json``, then
``flatten`` (the same ``FlattenSettings`` as files). DS and IS values and the values the
server left out (``BulkDataURI``) bypass pydicom's JSON conversion
(``take_number_text`` / ``put_number_text``): DS/IS text is the number's as sent
(``5.000000`` in the file arrives as ``5``), left-out values are ``<bulk data>``.

Most of that conversion's time is pydicom building a ``DataElement`` per value, which
the row then turns back into text. ``direct_row`` makes the same row straight from the
JSON for the cases whose text it reproduces exactly, each as the reference gives it:

* text VRs (not PN) of strings: ``join_text`` of the values joined with ``\\`` (pydicom
  splits and ``format_converted`` joins them again); UI only without surrounding
  whitespace (``UID`` strips it);
* PN of ``Alphabetic`` components only, without ``=`` (``PersonName`` drops empty
  trailing groups);
* binary numbers (US SS UL SL UV SV FL FD) of JSON numbers: ``format_number`` of
  pydicom's ``int``/``float`` of each;
* DS and IS, and left-out values of binary VRs (not a public UN): the text the reference puts back
  (``number_bytes``), after the level's other elements as it puts them back;
* sequences, item by item up to ``--max-sequence-items``, and elements without value.

Any other public element (AT, UN, inline binary, odd names) goes through the reference
conversion on its own (it depends on nothing else of the dataset); an element that is
not a column (private, overlays) only has to convert without error, as the reference
converts it. Whatever it cannot tell (``--include-private``, ``--tags``, another pydicom
configuration, malformed JSON, an error anywhere): ``None``, and the instance goes
through ``pydicom_row`` whole, which raises its own error where the JSON is bad.
``tests/test_dicomweb_json.py`` compares both over every instance of the differential
test's server (pydicom's files) and of a generated archive.
"""

from __future__ import annotations

import copy

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import Tag

from transforms.common.rows import (
    BINARY_VRS, BULK_DATA_TEXT, NUMBER_FORMATS, PATH_COLUMN, TEXT_VRS, BulkData, Row,
)
from transforms.inputs.dicomweb import first_value
from transforms.reading.flatten import DEFAULT_ENCODINGS, FlattenSettings, flatten
from transforms.reading.naming import is_skipped_group, public_name
from transforms.reading.values import decode_text, format_number, join_text

SOP_INSTANCE_UID = "00080018"
_VALUE_KEYS = ("Value", "InlineBinary", "BulkDataURI")
_FLOATS = frozenset({"FL", "FD"})
_PLAIN_TEXT = TEXT_VRS - {"PN", "DS", "IS"}
_KNOWN_VRS = TEXT_VRS | BINARY_VRS | frozenset(NUMBER_FORMATS) | {"SQ", "AT"}
# Column names of public tags by item prefix, then tag (as in flatten).
_NAMES: dict[str, dict[int, str]] = {}


def instance_row(instance: dict, series_url: str, index: int, settings: FlattenSettings):
    """One instance's DICOM JSON -> its ``Row`` (as ``flatten`` gives a file's); the
    JSON is left as it is only where ``direct_row`` made the row."""
    sop = first_value(instance, SOP_INSTANCE_UID) or f"item-{index}"
    path = f"{series_url}/instances/{sop}"
    row = direct_row(instance, path, settings)
    return row if row is not None else pydicom_row(instance, path, settings)


def pydicom_row(instance: dict, path: str, settings: FlattenSettings) -> Row:
    """The reference: ``Dataset.from_json`` and ``flatten`` (changes ``instance``)."""
    taken: dict = {}
    take_number_text(instance, taken, settings.max_sequence_items)
    # No bulk data handler: pydicom would inspect its signature for every element.
    dataset = put_number_text(Dataset.from_json(instance), instance, taken)
    row, _ = flatten(dataset, path, settings)
    return row


# The DS, IS and left-out values, as both conversions write them


def number_text(value, vr: str):
    """A DS or IS value the JSON gave as a number, as the text a file would hold:
    ``2048`` stays ``2048``, ``81.6327`` its shortest form. Strings (newer servers send
    DS/IS as strings, PS3.18 F.2.3.1) stay as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if vr == "IS" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(value)


def number_bytes(element: dict) -> bytes | None:
    """A DS or IS element's values as the bytes a file would hold (``2048\\5.5``);
    ``None`` without values."""
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    if all(type(value) is float for value in values) and element["vr"] == "DS":
        text = "\\".join(map(float.__repr__, values))  # contours, grids: fast
    else:
        text = "\\".join("" if value is None else str(number_text(value, element["vr"]))
                         for value in values)
    return text.encode("ascii", "backslashreplace")


def take_number_text(json_dataset: dict, taken: dict, keep_items: int = 0) -> dict:
    """Remove the DS and IS elements of a DICOM JSON dataset (nested items too), keeping
    each as the bytes a file would hold (``2048\\5.5``) in ``taken[id(item)]``; and the
    elements the server left out (``BulkDataURI``), as ``(vr, None)``. Items past the
    first ``keep_items`` of a sequence (``--max-sequence-items``; 0 = all), which the
    flattener only counts, become empty: pydicom need not build them.

    ``Dataset.from_json`` would turn every DS and IS value into a validated float
    (``2048`` is then written ``2048.0``), which is also most of its time on contours
    and grids; ``put_number_text`` puts them back as raw elements, which the flattener
    formats like a file's."""
    numbers = {}
    for key in [key for key, element in json_dataset.items() if isinstance(element, dict)
                and (element.get("vr") in ("DS", "IS") or "BulkDataURI" in element)]:
        element = json_dataset.pop(key)
        if "BulkDataURI" in element:  # left out by the server: put back as BulkData
            numbers[int(key, 16)] = (element.get("vr") or "UN", None)
            continue
        text = number_bytes(element)
        if text is not None:
            numbers[int(key, 16)] = (element["vr"], text)
    if numbers:
        taken[id(json_dataset)] = numbers
    for element in json_dataset.values():
        if isinstance(element, dict) and element.get("vr") == "SQ":
            items = element.get("Value") or []
            if keep_items and len(items) > keep_items:
                items[keep_items:] = [{}] * (len(items) - keep_items)
            for item in items[:keep_items or None]:
                if isinstance(item, dict):
                    take_number_text(item, taken, keep_items)
    return json_dataset


def put_number_text(dataset: Dataset, json_dataset: dict, taken: dict) -> Dataset:
    """The elements ``take_number_text`` took, back into ``dataset`` (built from
    ``json_dataset``): numbers as raw elements, left-out values as ``BulkData``; nested
    items too; in place."""
    for tag, (vr, text) in taken.get(id(json_dataset), {}).items():
        if text is None:
            dataset[tag] = DataElement(tag, vr, BulkData())
        else:
            dataset[tag] = RawDataElement(Tag(tag), vr, len(text), text, 0, False, True)
    for key, element in json_dataset.items():
        if isinstance(element, dict) and element.get("vr") == "SQ" and element.get("Value"):
            tag = int(key, 16)
            if tag in dataset:
                for item, json_item in zip(dataset[tag].value, element["Value"]):
                    if isinstance(json_item, dict):
                        put_number_text(item, json_item, taken)
    return dataset


# The direct conversion


class _Decline(Exception):
    """The instance goes through ``pydicom_row`` whole."""


def direct_row(instance, path: str, settings: FlattenSettings) -> Row | None:
    """``pydicom_row``'s row made from the JSON without building a ``Dataset``, or
    ``None`` where it would not be exactly the same (``instance`` is not changed)."""
    if (settings.include_private or settings.selection or config.datetime_conversion
            or config.use_none_as_empty_text_VR_value
            or config.settings.reading_validation_mode == config.RAISE
            or not isinstance(instance, dict)):
        return None
    values, vrs = {PATH_COLUMN: path}, {PATH_COLUMN: "UR"}
    try:
        _walk(instance, "", values, vrs, settings)
    except Exception:  # pylint: disable=broad-except  # _Decline, or JSON it cannot read
        return None
    return Row(path, values, vrs)


def _walk(dataset: dict, prefix: str, values: dict, vrs: dict, settings) -> None:
    names = _NAMES.setdefault(prefix, {})
    later = []  # DS, IS and left-out values: the reference puts them back last
    for key, element in dataset.items():
        vr = element["vr"]  # a KeyError (no VR, not a dict): declined, as pydicom fails
        if vr not in _KNOWN_VRS or len(key) != 8:
            raise _Decline(key)
        tag = int(key, 16)
        group = tag >> 16
        if group & 1 or (group >= 0x6000 and is_skipped_group(group)):
            _check_unused(key, element, bool(group & 1), settings)
            continue
        name = names.get(tag)
        if name is None:
            name = names[tag] = prefix + public_name(tag)
        if "BulkDataURI" in element:
            if vr not in BINARY_VRS or vr == "UN":  # pydicom gives a public UN its VR
                raise _Decline(key)
            later.append((name, BULK_DATA_TEXT, vr))
            continue
        if vr in ("DS", "IS"):
            raw = number_bytes(element)
            text = decode_text(vr, raw, DEFAULT_ENCODINGS) if raw else ""
            if text:
                later.append((name, text, vr))
            continue
        present = [value_key for value_key in _VALUE_KEYS if value_key in element]
        if not present or (present == ["Value"] and element["Value"] == []):
            continue  # no value: no column
        if vr == "SQ" and present == ["Value"] and isinstance(element["Value"], list):
            _items(element["Value"], name, values, vrs, settings)
            continue
        text = _text(vr, element["Value"]) if present == ["Value"] else None
        if text is None:
            _reference_element(key, element, prefix, values, vrs, settings)
        elif text:
            values[name] = text
            vrs[name] = vr
    for name, text, vr in later:
        values[name] = text
        vrs[name] = vr


def _items(items: list, name: str, values: dict, vrs: dict, settings) -> None:
    limit = settings.max_sequence_items
    for index, item in enumerate(items if not limit else items[:limit], start=1):
        if item is None:
            continue  # an empty item
        if not isinstance(item, dict):
            raise _Decline(name)
        item_name = name if index == 1 else f"{name} [{index}]"
        _walk(item, item_name + " - ", values, vrs, settings)
    if limit and len(items) > limit:
        values[f"{name} #items"] = str(len(items))
        vrs[f"{name} #items"] = "IS"


def _text(vr: str, values) -> str | None:
    """The text of a ``Value`` list as the reference writes it, or ``None`` where this
    does not know it exactly."""
    if not isinstance(values, list):
        return None
    if vr in _PLAIN_TEXT:
        if not all(type(value) is str for value in values):
            return None
        if vr == "UI" and any(value != value.strip() for value in values):
            return None
        return join_text(vr, "\\".join(values))
    if vr in NUMBER_FORMATS:
        number = float if vr in _FLOATS else int
        if not all(type(value) is int or (number is float and type(value) is float)
                   for value in values):
            return None
        return "\\".join(format_number(vr, number(value)) for value in values)
    if vr == "PN":
        names = []
        for value in values:
            if type(value) is not dict or value.keys() != {"Alphabetic"}:
                return None
            alphabetic = value["Alphabetic"]
            if type(alphabetic) is not str or "=" in alphabetic:
                return None
            names.append(alphabetic)
        return join_text(vr, "\\".join(names))
    return None


def _reference_element(key: str, element: dict, prefix: str, values: dict, vrs: dict,
                       settings) -> None:
    """One public element that is not a sequence, converted as the reference does (its
    text depends on nothing else of the dataset)."""
    row = pydicom_row({key: element}, "", settings)  # changes only the new dict
    for name, text in row.values.items():
        if name != PATH_COLUMN:
            values[prefix + name] = text
            vrs[prefix + name] = row.vrs[name]


def _check_unused(key: str, element: dict, private: bool, settings) -> None:
    """An element that is no column converts without error, as in the reference (which
    converts every element): plain values are known to; the others are converted."""
    vr = element["vr"]
    if "BulkDataURI" in element:
        if vr not in BINARY_VRS or (vr == "UN" and not private):
            raise _Decline(key)
        return
    if vr in ("DS", "IS"):
        return  # put back as raw bytes, never converted
    present = [value_key for value_key in _VALUE_KEYS if value_key in element]
    if not present:
        return
    values = element.get("Value")
    if present == ["Value"] and isinstance(values, list):
        if vr in _PLAIN_TEXT and all(type(value) is str for value in values):
            return
        if vr in NUMBER_FORMATS and all(type(value) in (int, float) for value in values):
            return
    pydicom_row({key: copy.deepcopy(element)}, "", settings)  # raises as the reference
