"""Flatten one pydicom Dataset into a row: ``{column name: text}`` plus each column's VR.

What is read and what is skipped, explicitly:

* Every element of the File Meta group and of the dataset, recursively into every
  sequence item (up to ``max_sequence_items`` items per sequence).
* Skipped: overlays (even groups 60xx), pixel data (7FE0), and the digital-signature /
  data-set-trailing / item-delimiter groups FFFA, FFFC, FFFE. Private (odd) groups are
  skipped unless ``include_private``.
* Empty values are absent: a column is only ever filled with real text. ``NONE``, ``N/A``
  or ``0`` are values like any other.

Columns are named by ``transforms/reading/naming.py``; values are written in DICOM's own
text form by ``transforms/reading/values.py``, from the raw bytes where it can (the fast
path) or from pydicom's converted value (``reference=True``, for tests).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Callable, NamedTuple

from pydicom import config, hooks
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from transforms.common.pydicom_internals import item_is_implicit_vr
from transforms.common.rows import DEFAULT_ENCODING, PATH_COLUMN, TEXT_VRS, Row
from transforms.content.selection import SKIPPED
from transforms.reading.naming import element_name, is_skipped_group, public_name
from transforms.reading.values import (
    decode_text, format_converted, format_raw, join_text, raw_bytes_text,
)

DEFAULT_ENCODINGS = [DEFAULT_ENCODING]
SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_REPRESENTATION = 0x00280103
ITEM_TAG = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER_TAG = (0xFFFE, 0xE0DD)
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class FlattenSettings:
    include_private: bool = False
    max_sequence_items: int = 16  # 0 = unlimited
    max_binary_bytes: int = 64
    # Bounded cells (transforms/reading/cells.py), applied to the Row after flattening.
    max_values: int = 256  # 0 = unlimited
    max_cell_chars: int = 32000  # 0 = unlimited
    # transforms.content.selection.Selection (--tags/--exclude-tags); None or empty: every element.
    selection: object = None
    # --format json: each row also carries its DICOM JSON line (transforms/reading/dicom_json.py).
    dicom_json: bool = False


# Sequences without pydicom Datasets


class _ParsedSequence(NamedTuple):
    """A sequence's items as ``{tag: RawDataElement | _ParsedSequence}`` dicts."""

    items: list


class _NotSimple(Exception):
    """A sequence that needs pydicom's Dataset context (see ``parse_sequence``)."""


def parse_sequence(raw: RawDataElement, include_private: bool) -> _ParsedSequence | None:
    """The items of a defined-length sequence's bytes, or None to let pydicom do it.

    Reads the bytes as ``pydicom.values.convert_SQ`` -> ``read_sequence`` ->
    ``read_sequence_item`` -> ``read_dataset`` do (same item loop, same explicit/implicit
    VR check, pydicom's ``data_element_generator`` for the elements), but keeps each
    item as a plain dict of raw elements instead of building a ``Dataset`` for it.

    None (the caller converts the sequence with pydicom) when anything would need a
    ``Dataset``'s context: private elements when they are kept (their names need the
    item's converted creator), ambiguous VRs (they depend on the parents' Pixel
    Representation), elements pydicom has already converted (undefined-length nested
    sequences), or anything that raises or warns on the way.
    """
    if config.data_element_callback is not None:
        return None  # pydicom would run it on the element before converting it
    try:
        return _parse_sequence(
            raw.value, raw.is_implicit_VR, raw.is_little_endian, include_private
        )
    except Exception:  # pylint: disable=broad-except
        return None


def _pixel_representation_converts(dataset: Dataset | dict) -> bool:
    """Do what converting a sequence with ``dataset[tag]`` also does to ``dataset``.

    ``Dataset.__getitem__`` converts the dataset's own Pixel Representation whenever it
    converts a sequence (``_set_pixel_representation``); if that fails, the sequence
    element fails with it. False in that case, and the caller converts the sequence
    with pydicom, which fails exactly as before.
    """
    if not isinstance(dataset, Dataset) or PIXEL_REPRESENTATION not in dataset:
        return True
    try:
        dataset[PIXEL_REPRESENTATION]
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _parse_sequence(
    value: bytes, implicit: bool, little: bool, include_private: bool
) -> _ParsedSequence:
    items = []
    fp = io.BytesIO(value)
    fp_tell = fp.tell
    header = struct.Struct("<HHL" if little else ">HHL").unpack
    bytelength = len(value)
    while fp_tell() < bytelength:  # read_sequence
        group, element, length = header(fp.read(8))  # read_sequence_item
        if (group, element) == SEQUENCE_DELIMITER_TAG:
            break
        if (group, element) != ITEM_TAG:
            raise _NotSimple("not an item")
        start = fp_tell()  # read_dataset, at_top_level=False
        item_implicit = item_is_implicit_vr(fp, implicit, little)
        fp.seek(start)
        elements = data_element_generator(fp, item_implicit, little)
        item: dict = {}
        if length == UNDEFINED_LENGTH:
            for elem in elements:
                item[elem.tag] = elem
        else:
            while fp_tell() - start < length:
                elem = next(elements)
                item[elem.tag] = elem
        if PIXEL_REPRESENTATION in item and any(
            getattr(elem, "VR", None) in (None, "UN", "SQ") for elem in item.values()
        ):
            # A Dataset converts its Pixel Representation when one of its sequences
            # is converted, and that can fail the sequence (see below).
            raise _NotSimple("Pixel Representation next to a sequence")
        for tag, elem in item.items():
            if not isinstance(elem, RawDataElement):
                raise _NotSimple("converted element")
            group = tag >> 16
            if group & 1:
                if include_private:
                    raise _NotSimple("private element")
                continue
            if is_skipped_group(group):
                continue
            vr = elem.VR
            if vr is None or vr == "UN":
                data: dict = {}
                hooks.raw_element_vr(elem, data, encoding=None, ds=None)
                vr = data["VR"]
            if " or " in vr:
                raise _NotSimple("ambiguous VR")
            if vr == "SQ":
                item[tag] = _parse_sequence(
                    elem.value or b"", elem.is_implicit_VR, elem.is_little_endian,
                    include_private,
                )
        items.append(item)
    return _ParsedSequence(items)


# Walking the dataset


# Column names of public tags by item prefix, then tag: a name depends on nothing else.
_PUBLIC_COLUMN_NAMES: dict[str, dict[int, str]] = {}


@dataclass
class _Walker:
    settings: FlattenSettings
    read_deferred: Callable[[RawDataElement], RawDataElement] | None
    values: dict
    vrs: dict
    bad_elements: list
    reference: bool = False
    # The tag selection at the level being walked (transforms.content.selection); None = all.
    selector: object = None

    def walk(self, dataset: Dataset | dict, prefix: str, encodings: list[str]) -> None:
        """``dataset``: a pydicom Dataset or an item of a ``_ParsedSequence``."""
        if SPECIFIC_CHARACTER_SET in dataset:
            encodings = self._encodings(dataset, encodings)
        include_private = self.settings.include_private
        names = _PUBLIC_COLUMN_NAMES.get(prefix)
        if names is None:
            names = _PUBLIC_COLUMN_NAMES[prefix] = {}
        # items() gives the elements as stored (raw, deferred ones unread) without the
        # per-tag lookups of get_item(); row order does not matter (columns are ordered
        # by name later). A list, because converting a sequence replaces its entry.
        selector = self.selector
        for tag, item in list(dataset.items()):
            group = tag >> 16
            if group & 1 and not include_private:
                continue
            if group >= 0x6000 and is_skipped_group(group):
                continue
            if selector is not None:  # unselected elements are never converted
                below = selector.select(tag, dataset)
                if below is SKIPPED:
                    continue
                self.selector = below
            if group & 1:
                name = prefix + element_name(BaseTag(tag), dataset)
            else:
                # A plain int key: looking a BaseTag up calls its Python __eq__.
                key = tag & 0xFFFFFFFF
                name = names.get(key)
                if name is None:
                    name = names[key] = prefix + public_name(key)
            try:
                self._element(dataset, tag, item, name, encodings)
            except Exception as exc:  # one bad element never loses the file
                self.bad_elements.append(f"{name}: {exc}")
                if isinstance(dataset, Dataset):
                    raw = dataset.get_item(tag, keep_deferred=True)
                else:  # an item of a parsed sequence: raw elements only
                    raw = dataset.get(tag)
                text = raw_bytes_text(
                    getattr(raw, "value", None) if isinstance(raw, RawDataElement) else None,
                    getattr(raw, "length", 0) or 0,
                    self.settings.max_binary_bytes,
                )
                if text:
                    self.values[name] = text
                    self.vrs[name] = "UN"
            self.selector = selector

    def _encodings(self, dataset: Dataset | dict, inherited: list[str]) -> list[str]:
        if isinstance(dataset, Dataset):
            raw = dataset.get_item(SPECIFIC_CHARACTER_SET)
        else:
            raw = dataset[SPECIFIC_CHARACTER_SET]
        if isinstance(raw, RawDataElement):
            value = raw.value.decode(DEFAULT_ENCODING) if raw.value else ""
            terms = [t.strip(" \0") for t in value.split("\\")]
        else:
            value = raw.value
            terms = list(value) if isinstance(value, MultiValue) else [value or ""]
        if not any(terms):
            return inherited
        try:
            return convert_encodings(terms if len(terms) > 1 else terms[0])
        except Exception:  # pylint: disable=broad-except  # garbage, not a character set
            return inherited

    def _element(self, dataset: Dataset, tag: int, item, name: str, encodings) -> None:
        if self.reference:
            elem = dataset[tag]
            if elem.VR == "PN" and isinstance(item, RawDataElement) and item.value:
                self._reference_names(elem, item.value, name)
            else:
                self._converted(elem, name, encodings)
            return
        if isinstance(item, RawDataElement):
            vr = item.VR
            value = item.value
            if value and vr in TEXT_VRS:  # the common case, as format_raw does it
                text = decode_text(vr, value, encodings)
                if text:
                    self.values[name] = text
                    self.vrs[name] = vr
                return
            if item.value is None and not item.length:
                return  # empty
            if item.value is None and self.read_deferred is not None:
                item = self.read_deferred(item)
                if item.value is not None:
                    dataset[tag] = item  # so that converting it below does not re-read
            vr = item.VR
            if vr is None or vr == "UN":  # implicit VR or explicit UN: pydicom decides
                data: dict = {}
                hooks.raw_element_vr(
                    item, data, encoding=encodings,
                    ds=dataset if isinstance(dataset, Dataset) else None,
                )
                vr = data["VR"]
            if vr == "SQ" and item.value is not None and not self.reference:
                parsed = parse_sequence(item, self.settings.include_private)
                if parsed is not None and _pixel_representation_converts(dataset):
                    self._items(parsed.items, name, encodings)
                    return
            if vr == "SQ" or " or " in vr:
                # Sequences are parsed by pydicom; ambiguous VRs need its context rules.
                self._converted(dataset[tag], name, encodings)
                return
            text = format_raw(vr, item, encodings, self.settings.max_binary_bytes)
        elif isinstance(item, _ParsedSequence):
            self._items(item.items, name, encodings)
            return
        else:
            if item.VR == "SQ":
                self._converted(item, name, encodings)
                return
            vr, text = item.VR, format_converted(item, self.settings.max_binary_bytes)
        if text:
            self.values[name] = text
            self.vrs[name] = vr

    def _reference_names(self, elem: DataElement, stored: bytes, name: str) -> None:
        """PN from pydicom's components, with the empty trailing groups it drops
        (``A^B=`` -> ``A^B``) counted back from the stored bytes."""
        names = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        stored_names = stored.rstrip(b"\0 ").split(b"\\")
        if len(stored_names) != len(names):
            self._converted(elem, name, None)
            return
        texts = []
        for person, raw_name in zip(names, stored_names):
            components = list(person.components)
            components += [""] * (raw_name.strip(b" ").count(b"=") + 1 - len(components))
            texts.append("=".join(components))
        text = join_text("PN", "\\".join(texts))
        if text:
            self.values[name] = text
            self.vrs[name] = "PN"

    def _converted(self, elem: DataElement, name: str, encodings) -> None:
        if elem.VR != "SQ":
            text = format_converted(elem, self.settings.max_binary_bytes)
            if text:
                self.values[name] = text
                self.vrs[name] = elem.VR
            return
        self._items(elem.value, name, encodings)

    def _items(self, items, name: str, encodings) -> None:
        """Walk a sequence's items (Datasets or parsed dicts) under column ``name``."""
        limit = self.settings.max_sequence_items
        kept = items if not limit else items[:limit]
        for index, item in enumerate(kept, start=1):
            item_name = name if index == 1 else f"{name} [{index}]"
            self.walk(item, item_name + " - ", encodings)
        if limit and len(items) > limit:
            self.values[f"{name} #items"] = str(len(items))
            self.vrs[f"{name} #items"] = "IS"


def flatten(
    dataset: Dataset,
    path: str,
    settings: FlattenSettings = FlattenSettings(),
    read_deferred: Callable[[RawDataElement], RawDataElement] | None = None,
    reference: bool = False,
) -> tuple[Row, list[str]]:
    """Return the file's row and a list of elements that had to be kept as raw text.

    ``reference=True`` formats every element from pydicom's converted value
    (``format_converted``) instead of its raw bytes: slower, and only there so tests
    can check that the fast path gives the same text.
    """
    values = {PATH_COLUMN: path}
    vrs = {PATH_COLUMN: "UR"}
    walker = _Walker(settings, read_deferred, values, vrs, [], reference)
    if settings.selection:
        walker.selector = settings.selection.root()
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None:
        walker.walk(file_meta, "", DEFAULT_ENCODINGS)
    walker.walk(dataset, "", DEFAULT_ENCODINGS)
    return Row(path, values, vrs), walker.bad_elements

