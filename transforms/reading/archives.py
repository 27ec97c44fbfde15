"""Archives: the members of zip and tar inputs, each extracted like a file of its own.

Extraction hands over every input it recognises as an archive (``ArchiveFound``, see
``transforms.inputs.archive_members``); nothing is ever unpacked to disk.

* A zip is listed from its central directory (ranged reads of the end of the file on
  buckets), one reference per member is emitted and reshuffled, and the members are
  extracted on whichever workers get them: the members of one large zip spread over the
  cluster. Each worker opens an archive once (central directory again) and then reads
  each member from its local header, inflating only as far as the DICOM header goes.
* A tar (plain or gzip/bzip2/xz-compressed) is read in one pass by one worker: member
  headers one after the other, each member's first bytes kept only while its DICOM
  header is read. A plain tar is read with seeks (on a bucket: one ranged read per
  member); a compressed one must be decompressed whole.

Outcomes are those of files: a ``Row``, a ``SKIPPED`` record or an ``ERRORS`` record per
member, named ``ARCHIVE!/MEMBER``. An archive that cannot be read at all (corrupt,
truncated before its directory) is one error named by its path; an archive with no
files is one skip. Directories inside archives are not members (as folders are not
files when walking). Archives inside archives are skipped with a reason: one level is
read. Each archive also emits its number of outcomes (``ARCHIVE_UNITS``), so the summary counts
members, and a manifest entry of kind ``"archive"`` with that number, so an incremental
run can tell a complete earlier listing from a partial one.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections import OrderedDict
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.common.collector import freeze_startup_objects
from transforms.inputs.archive_members import (
    ArchiveFound,
    MemberHeaderStream,
    claims_tar,
    member_path,
    open_zip_member,
    tar_member_name,
    tar_member_problem,
    zip_member_name,
    zip_member_problem,
)
from transforms.common.tags import (
    ARCHIVE_ENTRY, ARCHIVE_UNITS, CONTENT_COUNTS, ERRORS, MANIFEST, ROWS, SKIPPED, ZIP_MEMBERS,
)
from transforms.reading.errors import ErrorRecord, classify, one_line, original
from transforms.reading.dicom_json import apply_content
from transforms.reading.extract import (
    MAGIC, PREAMBLE_LENGTH, NotDicomFile, open_file, quiet_pydicom, read_dicom,
    sniff_stream,
)
from transforms.inputs.limits import FileGuard, FileLimitExceeded, FileLimits
from transforms.reading.file_outcomes import KeepFileMetadata
from transforms.common.paths import unescape
from transforms.inputs.ranged import open_ranged

NESTED = "archive inside an archive: not read (one level of archives is read)"
# Zip archives a worker keeps open (central directory read once per worker).
OPEN_ZIPS = 4


class ZipMemberRef(NamedTuple):
    """One zip member to extract. ``path``, ``size_in_bytes`` and
    ``last_updated_in_seconds`` are the archive's (FileMetadata's names), so
    ``KeepFileMetadata`` files the member's outcome under its archive's size and mtime."""

    path: str
    size_in_bytes: int
    last_updated_in_seconds: float
    index: int  # in the central directory
    dicom_path: str


def open_archive(path: str, size: int):
    """The archive's bytes, seekable: a local file, or ranged reads of an object."""
    real = unescape(path)
    if "://" in real and not real.startswith("file://"):
        return open_ranged(real, size=size)
    return open_file(path)


def read_member(stream, dicom_path: str, size: int, settings):
    """A member's outcome from ``stream`` (a ``LimitedStream`` at the member's first
    byte): a ``(Row, elements kept raw)`` pair, or the reason to skip it. Read like a
    matched file (``transforms.reading.extract.read_dicom``), by the pydicom path only."""
    prefix = stream.read(PREAMBLE_LENGTH + len(MAGIC))
    if sniff_stream(stream, dicom_path, prefix) is not None:
        return NESTED
    try:
        return read_dicom(stream, dicom_path, size, prefix, settings)
    except NotDicomFile as skip:
        return skip.reason


def archive_error(exc: BaseException, context: str) -> ErrorRecord:
    """The error record of an archive that cannot be read (not one of its members)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return classify(exc)
    return ErrorRecord("Corrupt", context + (one_line(str(exc)) or type(exc).__name__),
                       original(exc))


class _MemberDoFn(beam.DoFn):
    """Shared by both archive steps: counters, pydicom's quiet, the outcome records.

    The same counters and set-up as ``ExtractHeaders``, not inherited from it: its
    bundle lifecycle (batching, what it emits when) is its own."""

    def __init__(self, settings, progress=None, limits: FileLimits = FileLimits(),
                 content=None):
        self.settings = settings
        self.progress = progress
        self.limits = limits
        self.content = content  # transforms.content.settings.RowContent, as for matched files
        self.guard = None
        self.extracted = Metrics.counter("dicom", "extracted")
        self.errors = Metrics.counter("dicom", "errors")
        self.skipped = Metrics.counter("dicom", "skipped")
        self.bad_elements = Metrics.counter("dicom", "elements_kept_raw")

    def setup(self):
        quiet_pydicom()
        freeze_startup_objects()
        self.guard = FileGuard(self.limits)
        if self.progress is not None:
            self.progress.connect()

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()

    def _done(self):
        if self.progress is not None:
            self.progress.done(1)

    def _content_counts(self):
        """De-identification's figures of the rows since the last call, if any."""
        counts = self.content.take_counts() if self.content is not None else None
        if counts is not None:
            yield beam.pvalue.TaggedOutput(CONTENT_COUNTS, counts)

    def _skip(self, path: str, reason: str):
        self.skipped.inc()
        self._done()
        return beam.pvalue.TaggedOutput(SKIPPED, (path, reason))

    def _error(self, path: str, exc: BaseException, context: str = "", stream=None):
        """An archive's error (``context`` says which step) or a member's (classified
        like a matched file's, ``transforms.reading.errors.classify``)."""
        self.errors.inc()
        self._done()
        record = archive_error(exc, context) if context else classify(exc, stream)
        return beam.pvalue.TaggedOutput(ERRORS, (path, *record))

    def _member(self, open_source, dicom_path: str, size: int):
        """The outcome record of one member; ``open_source()`` gives its byte stream.
        Under the same per-file limits as a matched file (``--file-timeout``,
        ``--max-header-bytes``)."""
        if self.guard is None:  # used without setup()
            self.guard = FileGuard(self.limits)
        self.stream = None
        try:
            outcome = self.guard.run(self._read_member, open_source, dicom_path, size)
        except (Exception, FileLimitExceeded) as exc:  # pylint: disable=broad-except
            return self._error(dicom_path, exc, stream=self.stream)
        if isinstance(outcome, str):
            return self._skip(dicom_path, outcome)
        row, bad_elements = outcome
        row = apply_content(row, self.content)  # de-identification, and the JSON line
        if bad_elements:
            self.bad_elements.inc(bad_elements)
        self.extracted.inc()
        self._done()
        return row


    def _read_member(self, open_source, dicom_path: str, size: int):
        with open_source() as source:
            # Buffered: the header reader's many small reads and seeks then run in C.
            member = io.BufferedReader(MemberHeaderStream(
                source, size, dicom_path, limit=self.limits.header_bytes
            ))
            with self.guard.stream(member, size) as stream:
                self.stream = stream  # where the read got to, for the error message
                return read_member(stream, dicom_path, size, self.settings)


class ReadArchive(_MemberDoFn):
    """``ArchiveFound`` -> zip: a ``ZIP_MEMBERS`` reference per member; tar: every
    member's outcome. Then the archive's ``ARCHIVE_UNITS`` and its ``"archive"`` manifest entry."""

    def process(self, found: ArchiveFound):
        if found.kind == "zip":
            outputs = self._list_zip(found)
        else:
            outputs = self._read_tar(found)
        units = 0  # outcomes to come: member references, member outcomes, archive's own
        for output in outputs:
            units += 1
            yield output
        if units == 0:
            units = 1
            yield self._skip(found.path, "archive holds no files")
        if self.progress is not None:
            self.progress.matched(units)  # (the archive itself was done as a file)
        yield beam.pvalue.TaggedOutput(ARCHIVE_UNITS, units)
        yield beam.pvalue.TaggedOutput(MANIFEST, (
            found.path, found.size_in_bytes, found.last_updated_in_seconds,
            ARCHIVE_ENTRY, (units,),
        ))
        yield from self._content_counts()

    def _list_zip(self, found: ArchiveFound):
        try:
            with open_archive(found.path, found.size_in_bytes) as stream:
                with zipfile.ZipFile(stream) as archive:
                    infos = archive.infolist()
        except Exception as exc:  # pylint: disable=broad-except
            yield self._error(found.path, exc, "unreadable zip archive: ")
            return
        first_with_name: dict = {}
        for index, info in enumerate(infos):
            if info.is_dir():
                continue
            path = member_path(found.path, zip_member_name(info))
            problem = zip_member_problem(info)
            if path in first_with_name:
                yield self._skip(path, f"entry {index + 1} repeats the name of entry "
                                       f"{first_with_name[path] + 1}: only the first is read")
            elif problem is not None:
                first_with_name[path] = index
                yield self._skip(path, problem)
            else:
                first_with_name[path] = index
                yield beam.pvalue.TaggedOutput(ZIP_MEMBERS, ZipMemberRef(
                    found.path, found.size_in_bytes, found.last_updated_in_seconds, index, path
                ))

    def _read_tar(self, found: ArchiveFound):
        seen = 0
        first_with_name: dict = {}
        try:
            with open_archive(found.path, found.size_in_bytes) as stream:
                # A plain tar is read with seeks past member data; a compressed one
                # can only be read as a stream.
                mode = "r:" if found.kind == "tar" else "r|*"
                try:
                    archive = tarfile.open(fileobj=stream, mode=mode, encoding="utf-8",
                                           errors="surrogateescape")
                except tarfile.ReadError as exc:
                    if found.kind != "tar" and not claims_tar(found.path):
                        yield self._skip(found.path, f"{found.kind}-compressed file that "
                                                     "holds no tar archive (not read)")
                        return
                    yield self._error(found.path, exc, "unreadable tar archive: ")
                    return
                with archive:
                    for info in archive:
                        if info.isdir():
                            continue
                        path = member_path(found.path, tar_member_name(info))
                        seen += 1
                        problem = tar_member_problem(info)
                        if path in first_with_name:
                            yield self._skip(path, f"member {seen} repeats the name of member "
                                                   f"{first_with_name[path]}: only the first is read")
                            continue
                        first_with_name[path] = seen
                        if problem is not None:
                            yield self._skip(path, problem)
                            continue
                        yield self._member(
                            lambda info=info: archive.extractfile(info), path, info.size
                        )
        except Exception as exc:  # pylint: disable=broad-except
            yield self._error(found.path, exc, f"tar archive unreadable after {seen} members: ")


class ExtractZipMembers(_MemberDoFn):
    """``ZipMemberRef`` -> the member's ``Row``, or its skip / error record."""

    def setup(self):
        super().setup()
        self._open: OrderedDict = OrderedDict()

    def teardown(self):
        while self._open:
            self._close_oldest()

    def _close_oldest(self):
        _, (stream, archive) = self._open.popitem(last=False)
        archive.close()
        stream.close()

    def _archive(self, ref: ZipMemberRef) -> zipfile.ZipFile:
        key = (ref.path, ref.size_in_bytes, ref.last_updated_in_seconds)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key][1]
        stream = open_archive(ref.path, ref.size_in_bytes)
        try:
            archive = zipfile.ZipFile(stream)
        except Exception:
            stream.close()
            raise
        self._open[key] = (stream, archive)
        if len(self._open) > OPEN_ZIPS:
            self._close_oldest()
        return archive

    def process(self, ref: ZipMemberRef):
        try:
            archive = self._archive(ref)
            info = archive.infolist()[ref.index]
            if member_path(ref.path, zip_member_name(info)) != ref.dicom_path:
                raise zipfile.BadZipFile("archive changed since it was listed")
        except Exception as exc:  # pylint: disable=broad-except
            yield self._error(ref.dicom_path, exc)
        else:
            yield self._member(lambda: open_zip_member(archive, info), ref.dicom_path,
                               info.file_size)
            yield from self._content_counts()


OUTCOMES = (ROWS, ERRORS, SKIPPED, MANIFEST)


class ReadArchives(beam.PTransform):
    """``ArchiveFound`` -> {"rows", ERRORS, SKIPPED, MANIFEST, ARCHIVE_UNITS, CONTENT_COUNTS}:
    the outcomes of every member (rows as ``StoredRow``, like the extraction's), each
    archive's count and de-identification's figures."""

    def __init__(self, settings, progress=None, limits: FileLimits = FileLimits(),
                 content=None):
        super().__init__()
        self.settings = settings
        self.progress = progress
        self.limits = limits
        self.content = content

    def expand(self, found):
        listed = found | "List" >> beam.ParDo(
            KeepFileMetadata(ReadArchive(self.settings, self.progress, self.limits, self.content))
        ).with_outputs(ERRORS, SKIPPED, MANIFEST, ZIP_MEMBERS, ARCHIVE_UNITS, CONTENT_COUNTS,
                       main=ROWS)
        members = (
            listed[ZIP_MEMBERS]
            # The members of one zip go to many workers.
            | "Spread" >> beam.Reshuffle()
            | "ExtractMembers" >> beam.ParDo(
                KeepFileMetadata(ExtractZipMembers(
                    self.settings, self.progress, self.limits, self.content
                ))
            ).with_outputs(ERRORS, SKIPPED, MANIFEST, CONTENT_COUNTS, main=ROWS)
        )
        outputs = {
            tag: (listed[tag], members[tag]) | f"All_{tag}" >> beam.Flatten()
            for tag in (*OUTCOMES, CONTENT_COUNTS)
        }
        outputs[ARCHIVE_UNITS] = listed[ARCHIVE_UNITS]
        return outputs


class _MatchedAndArchives(beam.CombineFn):
    """Files (1 each) and archives (their unit counts) -> (files matched, archives)."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, accumulator, units):
        matched, archives = accumulator
        if units is None:  # a matched file
            return matched + 1, archives
        return matched + units - 1, archives + 1  # the archive counted as its members

    def merge_accumulators(self, accumulators):
        return tuple(map(sum, zip(*accumulators))) or (0, 0)

    def extract_output(self, accumulator):
        return accumulator


class CountMatched(beam.PTransform):
    """(matched files, archives' unit counts...) -> one ``(matched, archives)`` pair:
    files matched, with each archive counted as its members (and its own error or skip,
    if it has one), and the number of archives."""

    def expand(self, inputs):
        files, *units = inputs
        return (
            (files | "AsNone" >> beam.Map(lambda _: None), *units)
            | "All" >> beam.Flatten()
            | "Count" >> beam.CombineGlobally(_MatchedAndArchives())
        )
