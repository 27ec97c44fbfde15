"""Errors: a short, stable vocabulary of what went wrong with a file, in words.

Every file that cannot be read becomes one ``errors.csv`` record
``(DicomPath, ErrorType, Message, Exception)``:

* ``ErrorType``: one word of ``ERROR_TYPES``, stable across versions and readers, to
  filter and count on;
* ``Message``: what is wrong and where, for a person (``ends inside element
  (0008,1030): 22 of 65,535 bytes present``);
* ``Exception``: the original exception as ``Type: text``, for whoever debugs it.

``classify`` maps any exception a reader raises to that record. Libraries raise what
their code hit (``struct.error: unpack requires a buffer of 4 bytes``), so the type
comes from the exception *and* from what the read saw: a parse that failed after
reading to the end of the file is a truncated file; one that failed in the middle is
a corrupt one.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

from pydicom.errors import InvalidDicomError

from transforms.inputs.limits import FileTimeout, HeaderTooLarge

ERROR_TYPES = {
    "NotDicom": "named as DICOM (.dcm, .dicom, .dic, .ima) but holds no DICOM data, "
    "or empty; files not named so are skipped instead",
    "Truncated": "the file ends inside its header: it was cut short (a copy or "
    "transfer that stopped)",
    "Corrupt": "the header's structure is broken: impossible lengths, tags or VRs, "
    "garbage inside the header",
    "Unsupported": "valid in principle but beyond what the reader handles: an unknown "
    "character set or transfer syntax, nesting deeper than it can follow",
    "Unreadable": "the file could not be read at all: permission denied, vanished, "
    "I/O error, a bucket object that is gone or refused",
    "Timeout": "reading the file took longer than --file-timeout seconds; the run "
    "went on",
    "TooLarge": "the header needs more than --max-header-bytes bytes; nothing past "
    "the cap was read",
}


class ErrorRecord(NamedTuple):
    type: str
    message: str
    exception: str


class TruncatedFileError(Exception):
    """The file ends inside an element of its header."""


class NotDicomError(Exception):
    """A file that promises DICOM (by its name) but does not hold it."""


class CorruptFileError(Exception):
    """A file that looks like DICOM (``DICM`` marker) but whose header makes no sense."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def original(exc: BaseException) -> str:
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(stream) -> str:
    """``at byte 1,234 of 39,206`` from the limited stream the reader had, if any."""
    if stream is None:
        return ""
    size = stream.size
    if size is None:
        return f" (read up to byte {stream.furthest:,})"
    return f" (read up to byte {stream.furthest:,} of {size:,})"


def _megabytes(count: int) -> str:
    return f"{count / (1 << 20):,.0f} MiB" if count >= 1 << 20 else f"{count:,} bytes"


_STRUCT = re.compile(r"unpack requires a buffer of (\d+) bytes")
_UNKNOWN_VR = re.compile(r"Unknown Value Representation '(.*)' in tag (\([0-9A-Fa-f,]+\))")
_POSITION = re.compile(r"at file position (0x)?([0-9A-Fa-f]+)")
_FILE_META_HINT = "File Meta Information header or the 'DICM' prefix is missing"


def _plain(exc: BaseException) -> str:
    """The exception's own words, without pydicom's advice to the programmer."""
    text = one_line(str(exc)) or type(exc).__name__
    text = text.replace(" Use force=True to force reading.", "")
    return text


def classify(exc: BaseException, stream=None) -> ErrorRecord:
    """The record of one file's failure. ``stream``: the ``LimitedStream`` it was read
    through (where the read got to), or None if it was never opened."""
    exception = original(exc)
    if isinstance(exc, FileTimeout):
        seconds = exc.args[0] if exc.args else "?"
        return ErrorRecord("Timeout", f"reading took longer than the {seconds} s limit "
                           f"per file (--file-timeout){_where(stream)}", exception)
    if isinstance(exc, HeaderTooLarge):
        cap = exc.args[0] if exc.args else 0
        size = f" of a {stream.size:,}-byte file" if stream is not None and stream.size else ""
        return ErrorRecord("TooLarge", f"the header goes past the {_megabytes(cap)} read "
                           f"limit per file (--max-header-bytes){size}; nothing past it "
                           f"was read", exception)
    if isinstance(exc, TruncatedFileError):
        return ErrorRecord("Truncated", one_line(str(exc)), exception)
    if isinstance(exc, CorruptFileError):
        return ErrorRecord("Corrupt", one_line(str(exc)), exception)
    if isinstance(exc, NotDicomError):
        return ErrorRecord("NotDicom", one_line(str(exc)), exception)
    if isinstance(exc, InvalidDicomError):
        if _FILE_META_HINT in str(exc):
            return ErrorRecord("NotDicom", "no DICOM File Meta header and no 'DICM' "
                               "marker", exception)
        return ErrorRecord("Corrupt", f"invalid DICOM header: {_plain(exc)}"
                           f"{_where(stream)}", exception)
    if isinstance(exc, OSError) and exc.errno is not None:
        return ErrorRecord("Unreadable", one_line(exc.strerror or exc), exception)
    if isinstance(exc, MemoryError):
        return ErrorRecord("TooLarge", f"reading the header ran out of memory"
                           f"{_where(stream)}", exception)
    if isinstance(exc, RecursionError):
        return ErrorRecord("Unsupported", "sequences nested deeper than the reader can "
                           f"follow{_where(stream)}", exception)
    unknown_vr = _UNKNOWN_VR.search(str(exc))
    if unknown_vr is not None:
        return ErrorRecord("Corrupt", f"element {unknown_vr.group(2)} has an invalid VR "
                           f"{unknown_vr.group(1)!r}{_where(stream)}", exception)
    if type(exc).__name__ == "BytesLengthException":
        return ErrorRecord("Corrupt", f"a value's length is not a whole number of values "
                           f"of its VR{_where(stream)}: {_plain(exc)}", exception)
    if isinstance(exc, (LookupError, NotImplementedError)) and not isinstance(
        exc, (KeyError, IndexError)
    ):
        return ErrorRecord("Unsupported", f"{_plain(exc)}{_where(stream)}", exception)
    at_end = stream is not None and stream.hit_end
    if at_end and isinstance(exc, (struct.error, EOFError, OSError, ValueError, IndexError,
                                   KeyError, TypeError, AttributeError)):
        if _STRUCT.search(str(exc)) or "No tag to read" in str(exc):
            detail = "the last element's tag and length are cut off"
        else:
            detail = _plain(exc)
        return ErrorRecord("Truncated", f"ends inside the header at byte "
                           f"{stream.furthest:,}: {detail}", exception)
    if isinstance(exc, struct.error):
        return ErrorRecord("Corrupt", f"an element header is cut off by the next "
                           f"one or has an impossible length{_where(stream)}", exception)
    if isinstance(exc, zlib.error):
        return ErrorRecord("Corrupt", f"the deflated data set does not inflate: "
                           f"{_plain(exc)}{_where(stream)}", exception)
    position = _POSITION.search(str(exc))
    if position is not None:
        offset = int(position.group(2), 16)
        return ErrorRecord("Corrupt", f"the header breaks at byte {offset:,}: "
                           f"{_plain(exc)}", exception)
    return ErrorRecord("Corrupt", f"cannot parse the header: {_plain(exc)}{_where(stream)}",
                       exception)
