"""Row vocabulary: what a row is and the VR families its cells are formatted by.

Every stage names rows and their cells with these, so none needs to import the readers.
VRs are PS3.5 Section 6.2's value representations.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PATH_COLUMN = "DicomPath"
# A row's DICOM JSON line (``--format json``, transforms/reading/dicom_json.py): a cell
# that rides with the row to the table step, never a table column.
JSON_COLUMN = "{DICOM JSON}"

# A cell read only to group rows (a series key a tag selection leaves out): it waits in
# the row shards under this prefix and never becomes a column of the table.
GROUPING_PREFIX = "(grouping) "


def grouping_name(name: str) -> str:
    return GROUPING_PREFIX + name


def is_grouping(name: str) -> bool:
    return name.startswith(GROUPING_PREFIX)

# VRs whose stored bytes are text (PS3.5 6.2): decoded with the Specific Character Set...
CHARSET_TEXT_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
# ...or with the default repertoire.
DEFAULT_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
TEXT_VRS = CHARSET_TEXT_VRS | DEFAULT_TEXT_VRS
# Text VRs that hold a single value, where leading spaces are significant.
SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT", "UR"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
NUMBER_FORMATS = {
    "US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d",
}
NUMBER_SIZES = {vr: struct.calcsize("<" + code) for vr, code in NUMBER_FORMATS.items()}
# The default character repertoire (PS3.5 6.1.2.1), as Python names it.
DEFAULT_ENCODING = "iso8859"


class Row(NamedTuple):
    """One file's header: its path, column -> text, and column -> VR."""

    path: str
    values: dict
    vrs: dict


# A binary value a DICOMweb server left out of its metadata (DICOM JSON ``BulkDataURI``,
# PS3.18 F.2.6): its bytes and its length are not there, so its cell says so.
BULK_DATA_TEXT = "<bulk data>"


class BulkData(bytes):
    """The value ``pydicom.Dataset.from_json`` gets for a ``BulkDataURI``: written
    ``BULK_DATA_TEXT`` by the flattener, as long binary values are ``<N bytes>``."""
