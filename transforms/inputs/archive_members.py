"""Archive members: recognising zip and tar files, naming their members, and reading a
member's first bytes without unpacking anything.

* Recognised (:func:`sniff_archive`) by magic bytes first (zip ``PK\\3\\4``, tar
  ``ustar`` at byte 257, gzip, bzip2, xz), so a zip named ``.dat`` is read too; by name
  (``.zip``, ``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2``, ``.tar.xz`` ...) when the bytes do
  not say, so a self-extracting zip or an old tar without magic is read as well.
* Named (:func:`member_path`) ``ARCHIVE!/MEMBER``: the archive's path as matched, ``!/``,
  the member's name as stored (``../../x`` and ``/abs`` stay as they are: names only,
  nothing is ever written from an archive). Name bytes that are not UTF-8 become
  ``\\xNN`` and a backslash ``\\\\``, reversibly (:func:`unescape_name`): the rule of
  ``transforms.common.paths`` for local file names.
* Read (:class:`MemberHeaderStream`): a member's bytes come from one sequential stream
  (a zip member inflating, a tar member in its archive's stream); the stream keeps what
  it has read so the header reader can seek back, and never holds more than
  the per-file header cap (``--max-header-bytes``, ``MAX_MEMBER_HEADER_BYTES`` by
  default): a zip bomb costs at most that much inflation.
"""

from __future__ import annotations

import io
import stat
import sys
import tarfile
import zipfile
from typing import NamedTuple

from transforms.inputs.limits import FileLimits, HeaderTooLarge
from transforms.common.paths import escape, unescape
from transforms.common.streams import ReadOnlyStream

SEPARATOR = "!/"
# Bytes read to recognise a file: DICOM's 132 and a tar header's magic at 257.
SNIFF_LENGTH = 512
# The most a member's header may take (inflated) unless told otherwise: the default of
# --max-header-bytes, which the archive steps pass on (FileLimits.header_bytes).
MAX_MEMBER_HEADER_BYTES = FileLimits().header_bytes
READ_CHUNK = 8192

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
COMPRESSED_MAGICS = (("gzip", b"\x1f\x8b"), ("bzip2", b"BZh"), ("xz", b"\xfd7zXZ\x00"))
NAMES = (
    ("zip", (".zip",)),
    ("tar", (".tar",)),
    ("gzip", (".tar.gz", ".tgz")),
    ("bzip2", (".tar.bz2", ".tbz2", ".tbz")),
    ("xz", (".tar.xz", ".txz")),
)
TAR_NAMES = tuple(ending for kind, endings in NAMES if kind != "zip" for ending in endings)


class ArchiveFound(NamedTuple):
    """A matched file that is an archive. Has FileMetadata's ``path``, ``size_in_bytes``
    and ``last_updated_in_seconds``: an archive is one unit for incremental runs."""

    path: str
    size_in_bytes: int
    last_updated_in_seconds: float
    kind: str  # "zip", "tar", "gzip", "bzip2" or "xz"


# A member's header goes on past the cap (or it is a bomb): the per-file limit's own
# exception, so it is reported like a plain file's (``TooLarge``).
HeaderTooLargeError = HeaderTooLarge


class EncryptedMemberError(NotImplementedError):
    """A password-protected zip member: its bytes cannot be read (``Unsupported``)."""


class NotATarError(Exception):
    """A compressed file that holds no tar archive."""


def sniff_archive(prefix: bytes, name: str, trust_name: bool = True) -> str | None:
    """The archive kind of a file from its first ``SNIFF_LENGTH`` bytes, else ``None``.

    ``trust_name=False`` (the bytes look like DICOM) recognises by magic bytes only."""
    if prefix[:4] in ZIP_MAGICS:
        return "zip"
    if prefix[257:262] == b"ustar":
        return "tar"
    for kind, magic in COMPRESSED_MAGICS:
        if prefix.startswith(magic):
            return kind
    if trust_name:
        lower = name.lower()
        for kind, endings in NAMES:
            if lower.endswith(endings):
                return kind
    return None


def claims_tar(name: str) -> bool:
    return name.lower().endswith(TAR_NAMES)


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------

def escape_name(raw: bytes) -> str:
    """Name bytes as valid UTF-8 text, by ``transforms.common.paths.escape``'s rule: invalid
    bytes as ``\\xNN``, ``\\`` as ``\\\\``."""
    return escape(raw.decode("utf-8", "surrogateescape"))


def unescape_name(text: str) -> bytes:
    """The inverse of :func:`escape_name`."""
    return unescape(text).encode("utf-8", "surrogateescape")


def member_path(archive: str, raw_name: bytes) -> str:
    return archive + SEPARATOR + escape_name(raw_name)


def archive_of(path: str) -> str:
    """The archive part of a member's ``DicomPath`` (the path itself for other files).

    Split at the first ``!/``: a path whose folders end in ``!`` would be cut there too
    (such files are then re-extracted by every incremental run, never lost)."""
    return path.split(SEPARATOR, 1)[0]


def zip_member_name(info: zipfile.ZipInfo) -> bytes:
    """The name bytes as stored: zipfile decodes names without the UTF-8 flag as cp437."""
    if info.flag_bits & 0x800:
        return info.orig_filename.encode("utf-8")
    return info.orig_filename.encode("cp437")


def tar_member_name(info: tarfile.TarInfo) -> bytes:
    return info.name.encode("utf-8", "surrogateescape")


def tar_member_problem(info: tarfile.TarInfo) -> str | None:
    """Why a tar member that is not a directory is not read, or ``None`` for a file."""
    if info.isfile():
        return None
    if info.issym() or info.islnk():
        return f"link in archive (to {escape_name(info.linkname.encode('utf-8', 'surrogateescape'))}), not followed"
    return "not a regular file (device or fifo in archive)"


def zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in archive, not followed"
    return None


# --------------------------------------------------------------------------------------
# Reading a member's first bytes
# --------------------------------------------------------------------------------------

class MemberHeaderStream(ReadOnlyStream):
    """A seekable view of a member's first bytes, read on demand from ``source`` (a
    sequential binary stream positioned at the member's start).

    What has been read is kept, so seeking back is free; reading or seeking forward
    reads on from ``source``, never more than ``limit`` bytes in all
    (:class:`HeaderTooLargeError`) and never past the member's declared ``size``.
    """

    def __init__(self, source, size: int | None, name: str, limit: int | None = None):
        super().__init__(name)
        self._source = source
        self._size = size
        # 0: no cap (--max-header-bytes 0).
        self._limit = MAX_MEMBER_HEADER_BYTES if limit is None else limit or sys.maxsize
        self._buffer = bytearray()
        self._ended = False

    @property
    def bytes_read(self) -> int:
        return len(self._buffer)

    def stream_size(self) -> int:
        if self._size is None:
            raise io.UnsupportedOperation("seek from the end of a member of unknown size")
        return self._size

    def _fill(self, end: int) -> None:
        if self._size is not None:
            end = min(end, self._size)
        while len(self._buffer) < end and not self._ended:
            if len(self._buffer) >= self._limit:
                raise HeaderTooLarge(self._limit)
            want = min(max(end - len(self._buffer), READ_CHUNK), self._limit - len(self._buffer))
            if self._size is not None:
                want = min(want, self._size - len(self._buffer))
            chunk = self._source.read(want)
            if not chunk:
                self._ended = True
            self._buffer += chunk

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        self._fill(self.position + len(view))
        data = self._buffer[self.position:self.position + len(view)]
        view[:len(data)] = data
        self.position += len(data)
        return len(data)

    def readall(self) -> bytes:
        if self._size is None:
            raise io.UnsupportedOperation("readall of a member of unknown size")
        return self.read(max(0, self._size - self.position))


def open_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """A sequential stream of a zip member's bytes (inflated as they are read)."""
    if info.flag_bits & 0x1:
        raise EncryptedMemberError("encrypted member: no password, its bytes cannot be read")
    return archive.open(info)
