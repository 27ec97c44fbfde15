"""Extraction: read each matched file's DICOM header and emit its flat row.

Read: the first 132 bytes to recognise DICOM by content, then the header with
``stop_before_pixels``; values longer than ``DEFER_SIZE`` are not read unless they are
text (binary ones only need their length for ``<N bytes>``). Never read: pixel data.

Outputs: the main output is one ``Row`` per DICOM file; ``SKIPPED`` gets
``(path, reason)`` for files that are not DICOM; ``ERRORS`` gets
``(path, error type, message)`` for files that claim or look like DICOM but cannot be
read; ``ARCHIVES`` gets the zip and tar files, whose members ``transforms.archives``
reads. Every input file lands in exactly one of the four. ``read_header`` is the same
reading for bytes that are not a file of their own (archive members).
"""

from __future__ import annotations

import logging
import warnings

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydicom import dcmread
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement

from transforms.archive_members import SNIFF_LENGTH, ArchiveFound, sniff_archive
from transforms.flatten import TEXT_VRS, FlattenSettings, flatten
from transforms.storage import open_ranged

ERRORS = "errors"
SKIPPED = "skipped"
# Archives found among the inputs (``ArchiveFound``), read by ``transforms.archives``.
ARCHIVES = "archives"

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
# Binary values above this size are seeked past, not read.
DEFER_SIZE = 4096
# Extensions that promise DICOM: such a file that is not DICOM is an error, not a skip.
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic", ".ima")


class TruncatedFileError(Exception):
    """The file ends inside an element of its header."""


class NotDicomError(Exception):
    """A file that promises DICOM (by its name) but does not hold it."""


class NotDicomFile(Exception):
    """Not DICOM, and not named as DICOM: skipped with this reason, not an error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_file(path: str):
    """A seekable binary stream over ``path`` (local or any Beam filesystem).

    Bucket objects are read with bounded range requests, only as far as the header goes
    (``FileSystems.open`` would download 16 MiB of each)."""
    if "://" not in path:
        return open(path, "rb")
    return open_ranged(path)


def _plausible_first_tag(prefix: bytes, byteorder: str) -> bool:
    group = int.from_bytes(prefix[0:2], byteorder)
    element = int.from_bytes(prefix[2:4], byteorder)
    if group == 0 or group % 2 or group > 0x7FE0:
        return False
    return element == 0 or (group << 16 | element) in DicomDictionary


def recognise(prefix: bytes) -> tuple[str | None, str]:
    """Return ``("part10" | "raw" | None, reason)`` from a file's first 132 bytes.

    Part 10 files carry ``DICM`` after a 128-byte preamble. Files written without
    preamble and File Meta (raw datasets) are accepted when their first element's tag is
    a standard DICOM tag, in either byte order.
    """
    if not prefix:
        return None, "empty file"
    if prefix[PREAMBLE_LENGTH:PREAMBLE_LENGTH + 4] == MAGIC:
        return "part10", ""
    if len(prefix) >= 8 and (
        _plausible_first_tag(prefix, "little") or _plausible_first_tag(prefix, "big")
    ):
        return "raw", ""
    return None, "no DICOM preamble and no DICOM element at the start"


def check_complete(dataset, size: int | None = None) -> None:
    """pydicom returns short values at end of file; a short value means truncation.

    Deferred values (not read) are checked against the file's ``size`` instead.
    """
    for raw in dataset.values():  # as stored: deferred values stay unread
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        if raw.value is not None:
            present = len(raw.value)
        elif size is not None and raw.value_tell is not None:
            present = max(0, min(raw.length, size - raw.value_tell))
        else:
            continue
        if present < raw.length:
            raise TruncatedFileError(
                f"file ends inside element {raw.tag}: {present} of "
                f"{raw.length} bytes present"
            )


class ExtractHeaders(beam.DoFn):
    """FileMetadata -> Row, or a tagged skip / error record."""

    def __init__(self, settings: FlattenSettings, progress=None, read_archives: bool = True):
        self.settings = settings
        self.progress = progress
        self.read_archives = read_archives
        self.extracted = Metrics.counter("dicom", "extracted")
        self.errors = Metrics.counter("dicom", "errors")
        self.skipped = Metrics.counter("dicom", "skipped")
        self.bad_elements = Metrics.counter("dicom", "elements_kept_raw")

    def setup(self):
        # pydicom warns about every oddity it reads around; at archive scale that is
        # noise, and whatever matters ends up in the row or in errors.csv.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
        if self.progress is not None:
            self.progress.connect()

    def process(self, file_metadata):
        path = file_metadata.path
        try:
            outcome = self._read(path, file_metadata.size_in_bytes,
                                 file_metadata.last_updated_in_seconds)
        except Exception as exc:  # pylint: disable=broad-except
            self.errors.inc()
            outcome = beam.pvalue.TaggedOutput(
                ERRORS, (path, type(exc).__name__, _message(exc))
            )
        if self.progress is not None:
            self.progress.done(1)
        yield outcome

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()

    def _read(self, path: str, size: int, mtime: float = 0.0):
        """``size`` is the file's size as matched: values deferred past it are cut short."""
        with open_file(path) as stream:
            prefix = stream.read(SNIFF_LENGTH)
            # Archives by magic bytes, or by name unless the bytes look like DICOM.
            looks_like, _ = recognise(prefix)
            archive = None if looks_like == "part10" else sniff_archive(
                prefix, path, trust_name=looks_like is None
            )
            if archive is not None:
                if self.read_archives:  # its members are read by transforms.archives
                    return beam.pvalue.TaggedOutput(
                        ARCHIVES, ArchiveFound(path, size, mtime, archive)
                    )
                self.skipped.inc()
                return beam.pvalue.TaggedOutput(
                    SKIPPED, (path, f"{archive} archive (archive reading is off)")
                )
            stream.seek(0)
            try:
                row, bad_elements = read_header(stream, path, size, self.settings)
            except NotDicomFile as skip:
                self.skipped.inc()
                return beam.pvalue.TaggedOutput(SKIPPED, (path, skip.reason))
        if bad_elements:
            self.bad_elements.inc(bad_elements)
        self.extracted.inc()
        return row


def read_header(stream, path: str, size: int | None, settings: FlattenSettings):
    """One file's header, read from ``stream``, as ``(row, number of elements kept raw)``.

    The entry point for bytes that are not a matched file of their own (archive
    members): ``stream`` is seekable and starts at the file's first byte, ``size`` is
    the file's full size (values deferred past it are cut short). Raises
    :class:`NotDicomFile` for a file to skip, any other exception for an error."""
    kind, reason = recognise(stream.read(PREAMBLE_LENGTH + len(MAGIC)))
    if kind is None:
        if path.lower().endswith(DICOM_EXTENSIONS):
            raise NotDicomError(f"named as DICOM but not DICOM: {reason}")
        raise NotDicomFile(reason)
    stream.seek(0)
    dataset = dcmread(
        stream,
        stop_before_pixels=True,
        defer_size=DEFER_SIZE,
        force=kind == "raw",
    )
    # Garbage after "DICM" reads as a few odd private tags: require File Meta
    # or at least one standard element.
    if not dataset.file_meta and not any(tag in DicomDictionary for tag in dataset.keys()):
        raise NotDicomError("no File Meta and no standard DICOM element could be read")
    check_complete(dataset, size)

    def read_deferred(raw: RawDataElement) -> RawDataElement:
        # Only text is worth reading; binary values stay "<N bytes>".
        if raw.VR is not None and raw.VR not in TEXT_VRS and raw.VR != "SQ":
            return raw
        stream.seek(raw.value_tell)
        value = stream.read(raw.length)
        if len(value) < raw.length:
            raise TruncatedFileError(f"file ends inside element {raw.tag}")
        return raw._replace(value=value)

    row, bad_elements = flatten(dataset, path, settings, read_deferred)
    return row, len(bad_elements)


def _message(exc: Exception) -> str:
    text = str(exc) or repr(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return " ".join(text.split())

