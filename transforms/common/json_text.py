"""JSON text parsed to the very objects ``json.loads`` gives, by orjson where it can.

The nested outputs parse every row's DICOM JSON back (``nested.py``'s union, then
``nested_rows.py``'s rows): 115 MB for 10,000 files of the benchmark archive, where
``json.loads`` took 2.8 s and orjson 1.0 s. orjson reads standard JSON to the same
dicts (keys in document order), lists, strings and numbers (floats correctly rounded,
as Python's), and differs from ``json.loads`` on three things only:

* ``NaN``, ``Infinity`` and numbers past the double's range (``1e400``), which
  ``json.loads`` reads (Python's extensions; ``dicom_json``'s encoder writes them for a
  NaN or infinite FL/FD value): orjson refuses them, and ``json.loads`` reads the text;
* a lone surrogate (``json.loads`` keeps it; the text cannot even be UTF-8): the same;
* integers outside 64 bits, which orjson reads as floats without a word: an IS that
  pydicom kept from a malformed file can be one. A number of 19 digits or more
  (``2**63`` has 19) sends the text to ``json.loads``; ``_TOKEN_MARKS`` marks where a
  number can begin, so that digits inside strings (a UID's long components) do not.
"""

from __future__ import annotations

import json

import orjson

# Bytes as token marks: digits "0", "-" itself, what a number can follow ("[", ",",
# ":" and white space) "S", anything else "x". A number of 19 or more digits is then
# "S" + 19 "0" (or "S-" + 19 "0"); digits after '"' or '.' (inside a string, a
# fraction) never are. A string holding ", 1234567890123456789" is sent to json.loads
# too: slower, never different.
_TOKEN_MARKS = bytes(
    ord("0") if byte in b"0123456789" else ord("-") if byte == ord("-")
    else ord("S") if byte in b"[,: \t\r\n" else ord("x")
    for byte in range(256))
_LONG_NUMBER = b"S" + b"0" * 19
_LONG_NEGATIVE = b"S-" + b"0" * 19


def loads(text: str):
    """``json.loads(text)``, by orjson unless the text holds what it reads otherwise."""
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return json.loads(text)
    marks = data.translate(_TOKEN_MARKS)
    if (_LONG_NUMBER in marks or _LONG_NEGATIVE in marks
            or marks.startswith((_LONG_NUMBER[1:], _LONG_NEGATIVE[1:]))):  # text = number
        return json.loads(text)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # NaN, Infinity, 1e400: json's extensions
        return json.loads(text)
