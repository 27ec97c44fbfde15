"""Identifiers outside the elements PS3.15's table names: file references and free text.

**File and path references.** A file-set's folders are often named after the patient
(``PID4711\\CR1\\6154`` in a DICOMDIR's Referenced File ID), and Table E.1-1 does not list
the elements that hold them. The elements of the standard whose value names files or
folders on a medium (pydicom's data dictionary, PS3.3 F.3 and PS3.10) are kept, each
component replaced by the keyed path pseudonym that ``--pseudonymize-paths`` gives
``DicomPath`` (``transforms/content/pseudonyms.py``, ``Pseudonyms.path_components``), so
records that name one folder still agree. Every element of VR UR (a URL or URI:
Retrieve URL, Retrieve URI, Pixel Data Provider URL, Storage URL, the presentation
addresses of the File Meta ...) is removed: a URL holds host names, study UIDs and
patient IDs in its path and query, and has no component structure to keep.

**Free text.** A kept text value may quote a value the profile removed or replaced (a
Patient ID in a Code Meaning, a name in an Additional Patient History kept by an option).
Every removed or replaced value of the row yields *originals*: the whole value, each of
its ``\\`` values, each ``^``/``=`` name component and each ``/`` path component. An
original of at least ``MIN_ORIGINAL_CHARS`` characters is replaced wherever it occurs
inside a kept text value; a shorter one (from 3 characters) only as a whole word, and
only if it comes from a name, a Patient ID, Other Patient IDs or an Accession Number
(shorter pieces of other values turn up in any text by chance). Matching ignores case.
A value the profile replaced by a keyed pseudonym (Patient ID, UIDs, path components)
is replaced by that pseudonym, so the text stays linkable; any other by ``REMOVED``.
UIDs, numbers, dates and times are not text and are not scanned.
"""

from __future__ import annotations

import functools
import re

from pydicom.datadict import DicomDictionary

# Components of these are folder or file names on a medium (PS3.3 F.3, PS3.10 8.2).
PATH_REFERENCE_TAGS = {
    0x00041130: "File-set ID",
    0x00041141: "File-set Descriptor File ID",
    0x00041500: "Referenced File ID",
    0x0008040B: "Filename in Container",
    0x00880130: "Storage Media File-set ID",
}
URL_VR = "UR"
MIN_ORIGINAL_CHARS = 6
MIN_WORD_CHARS = 3
# Identity values whose short pieces are still replaced as whole words.
IDENTITY_TAGS = frozenset({0x00100020, 0x00101000, 0x00080050})
REMOVED_TEXT = "REMOVED"
# Values of these VRs are not free text: never scanned.
NOT_TEXT_VRS = frozenset({
    "UI", "DA", "DT", "TM", "DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD",
    "AT", "SQ", "OB", "OD", "OF", "OL", "OV", "OW",
})
_PIECES = re.compile(r"[\\^=/]")


@functools.lru_cache(maxsize=1)
def url_elements() -> dict:
    """Every standard element of VR UR, by tag (all removed under ``--deidentify``)."""
    return {tag: entry[2] for tag, entry in DicomDictionary.items() if entry[0] == URL_VR}


def is_url(tag: int, vr: str) -> bool:
    """Whether the element holds a URL or URI (removed): VR UR, as read or as listed."""
    return tag not in PATH_REFERENCE_TAGS and (vr == URL_VR or tag in url_elements())


class Originals:
    """The removed or replaced values of one row, as the pieces free text is searched for."""

    def __init__(self):
        self.long: dict = {}  # lower-cased piece -> replacement
        self.words: dict = {}

    def add(self, text: str, tag: int, vr: str, replacement: str | None = None) -> None:
        """``replacement``: the pseudonym the whole value got, if any."""
        identity = vr == "PN" or tag in IDENTITY_TAGS
        pieces = [text, *text.split("\\"), *_PIECES.split(text)]
        for piece in pieces:
            piece = piece.strip()
            if len(piece) >= MIN_ORIGINAL_CHARS:
                target = self.long
            elif identity and len(piece) >= MIN_WORD_CHARS:
                target = self.words
            else:
                continue
            whole = piece == text.strip()
            target.setdefault(piece.lower(), replacement if whole and replacement else REMOVED_TEXT)

    def __bool__(self) -> bool:
        return bool(self.long or self.words)

    def scrub(self, values: dict, vrs: dict, kept: list) -> int:
        """Replace the originals in the ``kept`` columns of ``values`` (in place);
        returns how many occurrences were replaced."""
        texts = [name for name in kept if vrs.get(name, "") not in NOT_TEXT_VRS]
        if not texts:
            return 0
        joined = "\0".join(values[name] for name in texts).lower()
        found = [piece for piece in self.long if piece in joined]
        words = [piece for piece in self.words if piece in joined]
        if not found and not words:
            return 0
        replacements = {**{p: self.words[p] for p in words}, **{p: self.long[p] for p in found}}
        alternatives = [re.escape(p) for p in sorted(found, key=len, reverse=True)]
        alternatives += [
            r"(?<!\w)" + re.escape(p) + r"(?!\w)" for p in sorted(words, key=len, reverse=True)
        ]
        pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        replaced = 0
        for name in texts:
            text, count = pattern.subn(
                lambda match: replacements.get(match.group(0).lower(), REMOVED_TEXT),
                values[name],
            )
            if count:
                values[name] = text
                replaced += count
        return replaced
