"""Extraction: read each matched file's DICOM header and emit its flat row.

Read: the first 132 bytes to recognise DICOM by content, then the header with
``stop_before_pixels``; values longer than ``DEFER_SIZE`` are not read unless they are
text (binary ones only need their length for ``<N bytes>``). Never read: pixel data.

Files come in batches (lists of ``FileMetadata``, see ``transforms.common.batches``) so that Beam's
per-element work is paid once per batch. Each file is read first by the lean header
reader (``transforms.reading.header_reader``); whatever it declines is read by the pydicom path
below, which also decides every error. Both counts go to the ``READER_COUNTS`` output.

Outputs: the main output is one ``Row`` per DICOM file; ``SKIPPED`` gets
``(path, reason)`` for files that are not DICOM; ``ERRORS`` gets
``(path, error type, message)`` for files that claim or look like DICOM but cannot be
read; ``ARCHIVES`` gets the zip and tar files (``ArchiveFound``), whose members
``transforms.reading.archives`` reads. Every input file lands in exactly one of the four.
``read_dicom`` is the reading itself, also used for the bytes of archive members.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import warnings

import apache_beam as beam
from apache_beam.metrics import Metrics
from pydicom import dcmread
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement

from transforms.common.collector import collection_paused, freeze_startup_objects
from transforms.common.tags import ARCHIVES, CONTENT_COUNTS, ERRORS, READER_COUNTS, SKIPPED
from transforms.inputs.archive_members import SNIFF_LENGTH, ArchiveFound, sniff_archive
from transforms.reading.dicom_json import apply_content, draft
from transforms.reading.errors import CorruptFileError, NotDicomError, TruncatedFileError, classify
from transforms.common.rows import JSON_COLUMN, NUMBER_SIZES, TEXT_VRS
from transforms.reading.flatten import FlattenSettings, flatten
from transforms.reading.naming import is_skipped_group
from transforms.reading.header_reader import HeaderReader
from transforms.reading.json_reader import header_draft
from transforms.inputs.limits import FileGuard, FileLimitExceeded, FileLimits, check_inflated_size
from transforms.common.paths import unescape
from transforms.inputs.special_files import SpecialFile, open_regular
from transforms.inputs.ranged import open_ranged


PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
# Binary values above this size are seeked past, not read.
DEFER_SIZE = 4096
# Extensions that promise DICOM: such a file that is not DICOM is an error, not a skip.
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic", ".ima")


class NotDicomFile(Exception):
    """Not DICOM, and not named as DICOM: skipped with this reason, not an error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def quiet_pydicom() -> None:
    """pydicom warns about every oddity it reads around; at archive scale that is noise,
    and whatever matters ends up in the row or in errors.csv."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


def open_file(path: str):
    """A seekable binary stream over ``path`` (escaped, local or any Beam filesystem).

    Local files are opened only if they are regular files (``SpecialFile`` otherwise).
    Bucket objects are read with bounded range requests, only as far as the header goes
    (``FileSystems.open`` would download 16 MiB of each)."""
    real = unescape(path)
    if "://" not in real:
        return open_regular(real)
    if real.startswith("file://"):
        return open_regular(real[len("file://"):])
    return open_ranged(real)


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
                f"ends inside element {raw.tag}: {present:,} of "
                f"{raw.length:,} bytes present"
            )


def _add_pairs(pairs) -> tuple:
    return tuple(map(sum, zip(*pairs))) or (0, 0)


class SumReaderCounts(beam.PTransform):
    """``READER_COUNTS`` records -> one dict for the summary."""

    def expand(self, counts):
        return (
            counts
            | "Sum" >> beam.CombineGlobally(_add_pairs)
            | "AsDict" >> beam.Map(
                lambda pair: {"lean_reader_rows": pair[0], "lean_reader_fallbacks": pair[1]}
            )
        )


class ExtractHeaders(beam.DoFn):
    """A list of FileMetadata (or one) -> a Row, or a tagged skip / error record, per file,
    and one ``READER_COUNTS`` record per call."""

    def __init__(self, settings: FlattenSettings, progress=None,
                 limits: FileLimits = FileLimits(), content=None, lean: bool = True,
                 read_archives: bool = True):
        self.settings = settings
        self.progress = progress
        self.read_archives = read_archives
        self.limits = limits
        self.guard = None
        self.lean = lean
        # transforms.content.settings.RowContent: selection's and de-identification's Row step.
        self.content = content
        self.extracted = Metrics.counter("dicom", "extracted")
        self.errors = Metrics.counter("dicom", "errors")
        self.skipped = Metrics.counter("dicom", "skipped")
        self.bad_elements = Metrics.counter("dicom", "elements_kept_raw")
        self.lean_rows = Metrics.counter("dicom", "lean_reader_rows")
        self.lean_fallbacks = Metrics.counter("dicom", "lean_reader_fallbacks")
        self.reader = None
        self.counts = [0, 0]

    def setup(self):
        quiet_pydicom()
        freeze_startup_objects()
        self.guard = FileGuard(self.limits)
        if self.progress is not None:
            self.progress.connect()
        # With --format json/nested the lean reader still makes the row; the JSON is
        # made from pydicom's dataset (read_dicom).
        self.reader = HeaderReader(dataclasses.replace(self.settings, dicom_json=False)
                                   ) if self.lean else None

    def process(self, files):
        batch = files if isinstance(files, list) else [files]
        self.counts = [0, 0]
        for file_metadata in batch:
            yield self._outcome(file_metadata)
        if self.progress is not None:
            self.progress.done(len(batch))
        lean_rows, fallbacks = self.counts
        self.lean_rows.inc(lean_rows)
        self.lean_fallbacks.inc(fallbacks)
        yield beam.pvalue.TaggedOutput(READER_COUNTS, (lean_rows, fallbacks))
        content_counts = self.content.take_counts() if self.content is not None else None
        if content_counts is not None:
            yield beam.pvalue.TaggedOutput(CONTENT_COUNTS, content_counts)

    def _outcome(self, file_metadata):
        path = file_metadata.path
        if self.guard is None:  # used without setup(), as in benchmarks
            self.guard = FileGuard(self.limits)
        self.stream = None
        try:
            # Under the per-file time limit; the header cap is on the stream.
            outcome = self.guard.run(self._read_row, path, file_metadata.size_in_bytes,
                                     file_metadata.last_updated_in_seconds)
        except SpecialFile as special:
            self.skipped.inc()
            outcome = beam.pvalue.TaggedOutput(SKIPPED, (path, special.reason))
        except (Exception, FileLimitExceeded) as exc:  # pylint: disable=broad-except
            self.errors.inc()
            outcome = beam.pvalue.TaggedOutput(ERRORS, (path, *classify(exc, self.stream)))
        return outcome

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()

    def _read_row(self, path: str, size: int, mtime: float):
        if self.settings.dicom_json:
            with collection_paused():
                return self._content(self._read(path, size, mtime))
        return self._content(self._read(path, size, mtime))

    def _content(self, outcome):
        # The one place rows change after reading (whichever reader read them): nothing
        # downstream (shards, state, reports) ever sees an original value of a
        # de-identified column.
        if not isinstance(outcome, beam.pvalue.TaggedOutput):
            outcome = apply_content(outcome, self.content)
        return outcome

    def _read(self, path: str, size: int, mtime: float):
        """``size`` is the file's size as matched: values deferred past it are cut short."""
        with self.guard.stream(open_file(path), size) as stream:
            self.stream = stream  # where the read got to, for the error message
            prefix = stream.read(PREAMBLE_LENGTH + len(MAGIC))
            archive = sniff_stream(stream, path, prefix)
            if archive is not None:
                if self.read_archives:  # its members are read by transforms.reading.archives
                    return beam.pvalue.TaggedOutput(
                        ARCHIVES, ArchiveFound(path, size, mtime, archive)
                    )
                self.skipped.inc()
                return beam.pvalue.TaggedOutput(
                    SKIPPED, (path, f"{archive} archive (archive reading is off)")
                )
            try:
                row, bad_elements = read_dicom(
                    stream, path, size, prefix, self.settings, self.reader, self.counts
                )
            except NotDicomFile as skip:
                self.skipped.inc()
                return beam.pvalue.TaggedOutput(SKIPPED, (path, skip.reason))
        if bad_elements:
            self.bad_elements.inc(bad_elements)
        self.extracted.inc()
        return row


def sniff_stream(stream, path: str, prefix: bytes) -> str | None:
    """The archive kind of a file (``transforms.inputs.archive_members.sniff_archive``), else
    ``None``: by magic bytes, or by name unless the bytes look like DICOM. ``stream``
    (a ``LimitedStream``) is left right after ``prefix``, its first 132 bytes, and the
    bytes sniffed past it do not count as where the header read got to (error messages
    and truncation are about the header read)."""
    kind, _ = recognise(prefix)
    if kind == "part10":
        return None
    furthest, hit_end = stream.furthest, stream.hit_end
    sniffed = prefix + stream.read(SNIFF_LENGTH - len(prefix))
    stream.seek(len(prefix))
    stream.furthest, stream.hit_end = furthest, hit_end
    return sniff_archive(sniffed, path, trust_name=kind is None)


# With --format json, a header the lean reader read is handed to pydicom in memory up
# to this size (larger ones, with long values it skips, are read from the file).
IN_MEMORY_HEADER = 1 << 20


def _read_deferred(dataset, settings: FlattenSettings, read_deferred) -> None:
    """Read into ``dataset`` the deferred values that ``flatten`` reads (the elements it
    shows), as it does, so that the JSON is made from the same elements either way."""
    include_private = settings.include_private
    for tag, raw in list(dataset.items()):
        if not isinstance(raw, RawDataElement) or raw.value is not None or not raw.length:
            continue
        group = tag >> 16
        if group % 2 and not include_private or is_skipped_group(group):
            continue
        try:
            read = read_deferred(raw)
        except Exception:  # pylint: disable=broad-except  # as flatten: the element decides
            continue
        if read.value is not None:
            dataset[tag] = read


def read_dicom(stream, path: str, size: int | None, prefix: bytes, settings: FlattenSettings,
               reader: HeaderReader | None = None, counts: list | None = None):
    """One file's header as ``(row, number of elements kept raw)``.

    ``stream`` is seekable, starts at the file's first byte and is positioned right after
    ``prefix``, its first 132 bytes; ``size`` is the file's full size (values deferred
    past it are cut short). ``reader``: the lean reader to try first, if any; ``counts``
gets its ``[rows, files left to pydicom]`` added. Raises
    :class:`NotDicomFile` for a file to skip, any other exception for an error (see
    ``transforms.reading.errors.classify``). Matched files and archive members both come here."""
    kind, reason = recognise(prefix)
    if kind is None:
        if path.lower().endswith(DICOM_EXTENSIONS):
            raise NotDicomError(f"named as DICOM but not DICOM: {reason}")
        raise NotDicomFile(reason)
    if kind == "part10" and size is not None and size <= PREAMBLE_LENGTH + len(MAGIC):
        raise TruncatedFileError("ends right after the preamble and 'DICM': "
                                 "no File Meta, no data set")
    lean_row = None
    if reader is not None:
        lean_row = reader.read(stream, path, size, prefix) if kind == "part10" else None
        if counts is not None:
            # raw datasets (no File Meta) always go to pydicom
            counts[0 if lean_row is not None else 1] += 1
        if lean_row is not None and not settings.dicom_json:
            return lean_row, 0
    stream.seek(0)
    if kind == "part10" and lean_row is None:  # (the lean reader declines deflated files)
        check_inflated_size(stream)  # a deflated data set inflates in one call
    source = stream
    lean_file = reader.last_file if lean_row is not None else None
    if lean_file is not None and lean_file.end <= IN_MEMORY_HEADER:
        # The lean reader found where the header ends: pydicom reads it from memory
        # (its many small reads are what it costs), up to the pixel data's element
        # header, where it stops as on the file; the lean reader's buffer often holds it.
        header = lean_file.first_bytes(lean_file.end + 12)
        if header is None:
            stream.seek(0)
            header = stream.read(lean_file.end + 12)
        if settings.dicom_json:
            # Its JSON straight from these bytes, where json_reader can make it all.
            json_draft = header_draft(header, settings)
            if json_draft is not None:
                lean_row.values[JSON_COLUMN] = json_draft
                return lean_row, 0
        source = io.BytesIO(header)
    dataset = dcmread(
        source,
        stop_before_pixels=True,
        defer_size=DEFER_SIZE,
        force=kind == "raw",
    )
    # Garbage after "DICM" reads as a few odd private tags: require File Meta
    # or at least one standard element.
    if not dataset.file_meta and not any(tag in DicomDictionary for tag in dataset.keys()):
        if kind == "part10":
            raise CorruptFileError("has the 'DICM' marker, but no File Meta and no "
                                   "standard DICOM element could be read after it")
        raise NotDicomError("no File Meta and no standard DICOM element could be read")
    check_complete(dataset, size)

    max_values = settings.max_values

    def keeps_values(count: int) -> bool:
        return not max_values or count <= max_values

    def read_deferred(raw: RawDataElement) -> RawDataElement:
        # Only text is worth reading; binary values stay "<N bytes>", and
        # numbers "<N values>" unless --max-values keeps that many.
        if raw.VR is not None and raw.VR not in TEXT_VRS and raw.VR != "SQ" and not (
            raw.VR in NUMBER_SIZES and keeps_values(raw.length // NUMBER_SIZES[raw.VR])
        ):
            return raw
        stream.seek(raw.value_tell)
        value = stream.read(raw.length)
        if len(value) < raw.length:
            raise TruncatedFileError(
                f"ends inside element {raw.tag}: {len(value):,} of "
                f"{raw.length:,} bytes present"
            )
        return raw._replace(value=value)

    if lean_row is not None:  # the JSON is still to make: read what flatten would read
        row, bad_elements = lean_row, ()
        _read_deferred(dataset, settings, read_deferred)
    else:
        row, bad_elements = flatten(dataset, path, settings, read_deferred)
    if settings.dicom_json:
        row.values[JSON_COLUMN] = draft(dataset, settings)  # while the file is open
    return row, len(bad_elements)
