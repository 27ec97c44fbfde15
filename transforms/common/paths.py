"""Paths as text: every file name becomes valid UTF-8, losslessly and reversibly.

POSIX file names are bytes. Python decodes them with ``surrogateescape``: a byte that
is not part of valid UTF-8 (``caf\\xe9.dcm`` written in Latin-1) becomes a lone
surrogate (``\\udce9``), which no UTF-8 coder, CSV or Parquet writer accepts. So every
matched path is escaped right after matching, before Beam encodes or shuffles it, and
stays escaped in every output (``DicomPath`` in the CSV and Parquet file, errors,
skipped, the manifest and the incremental state):

* a byte that is not valid UTF-8 -> ``\\xNN`` (two lower-case hex digits);
* a literal backslash -> ``\\\\`` (so that ``\\xNN`` in a real name stays distinguishable);
* everything else is unchanged: a plain ASCII/UTF-8 path without backslashes is its
  own escaped form.

``unescape`` gives back the exact name (with surrogates, which ``open`` and ``os``
functions turn back into the original bytes); files are opened through it.
"""

from __future__ import annotations

import re

_NEEDS_ESCAPE = re.compile(r"[\\\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _escape_char(match: re.Match) -> str:
    char = match.group(0)
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"  # any other lone surrogate (not from a POSIX name)


def escape(path: str) -> str:
    """The path as valid UTF-8 text (see the module docstring)."""
    if _NEEDS_ESCAPE.search(path) is None:
        return path
    return _NEEDS_ESCAPE.sub(_escape_char, path)


def _unescape_match(match: re.Match) -> str:
    body = match.group(1)
    if body == "\\":
        return "\\"
    if body[0] == "x":
        return chr(0xDC00 + int(body[1:], 16))
    return chr(int(body[1:], 16))


def unescape(path: str) -> str:
    """The original path of an escaped one. Raises ValueError on a malformed escape."""
    if "\\" not in path:
        return path
    text = _ESCAPE.sub(_unescape_match, path)
    if escape(text) != path:
        raise ValueError(f"not an escaped path: {path!r}")
    return text
