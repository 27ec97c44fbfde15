"""The leak scan: every original value a de-identified run removed or replaced, looked for
in every byte of every file the run left.

Originals come from a plain run of the same files: for each row, every value of a column
the profile does not keep yields its pieces (the whole value, each ``\\`` value, each
``^``/``=`` name component and ``/`` path component), those of at least 6 characters.
Kept values are compared ignoring case; outputs are searched for the piece as written and
in upper case. A piece is left out only where finding it would prove
nothing:

* it is (part of) a value this tool writes itself (dummies, ``REMOVED``) or of a column
  name, or a URL's scheme (``https:``, in every HTML page);
* it is part of a kept value of another row that does not hold it as an original
  ("TOSHIBA", one file's removed Institution Name, inside another's Manufacturer
  "TOSHIBA_MEC"), or part of a kept UID, number or date of any row (never scanned as
  free text);
* only private elements hold it (never read when de-identifying) and a kept element of
  its own row says it too (a GE Product id "LightSpeed Ultr" inside the Manufacturer's
  Model Name "LightSpeed Ultra").

Numbers are looked for as whole numbers only, from 8 digits: shorter ones turn up inside
any long number by chance.
"""

from __future__ import annotations

import json
import os
import re

import pyarrow.parquet as pq
from pydicom.datadict import dictionary_VR

from transforms.content.deidentify import DUMMIES, Deidentifier, DeidSettings, column_tags
from transforms.content.leaks import NOT_TEXT_VRS, REMOVED_TEXT
from transforms.content.pseudonyms import Pseudonyms

MIN_CHARS = 6
_PIECES = re.compile(r"[\\^=/]")
_NUMBER = re.compile(rb"[-+0-9.\\ ]+")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:")


def output_texts(out_dir) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file under ``out_dir``; Parquet files also as decoded text."""
    found = []
    for folder, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as stream:
                data = stream.read()
            found.append((path, data))
            if data[:4] == b"PAR1":
                table = pq.read_table(path)
                text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
                found.append((path + " (decoded)", text.encode("utf-8")))
    return found


def pieces(value: str) -> set:
    found = {value, *value.split("\\"), *_PIECES.split(value)}
    return {piece.strip() for piece in found if len(piece.strip()) >= MIN_CHARS}


def _vr(name: str) -> str:
    tags = column_tags(name)[0]
    try:
        return dictionary_VR(tags[-1]) if tags else ""
    except KeyError:
        return ""


def row_originals(plain_rows, options=frozenset()) -> list[tuple[dict, list, list]]:
    """Per plain row: ({piece of a removed or replaced value: whether only private
    elements hold it}, its kept free-text values, its kept UIDs, numbers and dates)."""
    deidentifier = Deidentifier(DeidSettings(options), Pseudonyms(b"x" * 32))
    result = []
    for row in plain_rows:
        removed, text, not_text = {}, [], []
        for name, value in row.items():
            if not value or name == "DicomPath":
                continue
            vr = _vr(name)
            if deidentifier.plan(name, vr) == "K":
                (not_text if vr in NOT_TEXT_VRS else text).append(value.lower())
                continue
            private = any((tag >> 16) & 1 for tag in column_tags(name)[0])
            for piece in pieces(value):
                removed[piece] = removed.get(piece, True) and private
        result.append((removed, "\n".join(text), "\n".join(not_text)))
    return result


def originals(plain_rows, column_names, options=frozenset()) -> set:
    """Every piece that must not be found anywhere (see the module's docstring)."""
    rows = row_originals(plain_rows, options)
    ours = "\n".join([*DUMMIES.values(), REMOVED_TEXT, *column_names]).lower()
    every_kept = "\n".join(text + "\n" + other for _, text, other in rows)
    found = set()
    for index, (removed, text, not_text) in enumerate(rows):
        for piece, private_only in removed.items():
            lower = piece.lower()
            # A quoted name ('"Columns"') is the name: Parquet's schema metadata quotes ours.
            if lower.strip("\"'") in ours or _SCHEME.fullmatch(lower) or lower in not_text:
                continue
            if private_only and lower in text:
                continue  # never read when de-identifying: the kept element says it itself
            if lower in every_kept and any(
                lower in other_not_text or (lower in other_text and piece not in other_removed)
                for other, (other_removed, other_text, other_not_text) in enumerate(rows)
                if other != index
            ):
                continue
            found.add(piece)
    return found


def leaks(out_dir, needles) -> list[str]:
    """``needle in path`` for each needle found in an output file (empty: no leak), as
    written or in upper case (folders are named ``MUELLERJ`` after ``Mueller``)."""
    texts = output_texts(out_dir)
    assert texts, f"no output under {out_dir}"
    found = []
    for needle_text in sorted(needles):
        forms = {needle_text.encode("utf-8"), needle_text.upper().encode("utf-8")}
        number = _NUMBER.fullmatch(needle_text.encode("utf-8")) is not None
        if number and len(needle_text) < 8:
            continue
        for path, data in texts:
            hits = [form for form in forms if form in data]
            if number:
                hits = [form for form in hits if re.search(
                    rb"(?<![0-9])" + re.escape(form) + rb"(?![0-9])", data)]
            if hits:
                found.append(f"{needle_text!r} in {path}")
    return found
