"""Matching: input patterns -> ``FileMetadata`` of every file, with escaped paths.

Like ``fileio.MatchAll``, with two differences that hostile archives need:

* Paths are escaped (``transforms.common.paths``) right here, before Beam encodes anything:
  a file name that is not UTF-8 would otherwise fail the first coder it meets.
  Patterns arrive escaped too (``beam.Create`` encodes them) and are unescaped here.
* Local folder walks keep what Beam's ``LocalFileSystem`` drops. Its walk lists
  named pipes, sockets and devices (as 0-byte files), but silently leaves out broken
  symbolic links and link loops (their ``stat`` fails), symbolic links to folders
  (never followed) and folders it cannot list. Here every such entry is listed, so
  that extraction skips it with a reason (``transforms.inputs.special_files``) instead of
  losing it. Which paths a glob matches is still decided by Beam
  (``FileSystem.match_files``, the same pattern rules as ``FileSystems.match``), and
  regular files get the metadata Beam gives them (``stat``: size and mtime).

Bucket patterns go to ``FileSystems.match`` unchanged.
"""

from __future__ import annotations

import os
import re

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.common.paths import escape, unescape

_BEFORE_GLOB = re.compile(r"^[^[*?]*")


def _metadata(path: str) -> FileMetadata | None:
    """``stat`` metadata as Beam gives it; ``lstat`` for links that do not resolve."""
    try:
        info = os.stat(path)
    except OSError:
        try:
            info = os.lstat(path)
        except OSError:
            return None  # vanished since it was listed
    return FileMetadata(path, info.st_size, info.st_mtime)


def _walk(directory: str):
    """Every non-directory entry under ``directory``, plus the entries a plain walk
    cannot descend into (links to folders, folders that cannot be listed)."""
    unlistable = []
    for folder, dirs, files in os.walk(directory, onerror=unlistable.append):
        for name in files:
            yield os.path.join(folder, name)
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                yield path
    for error in unlistable:
        if error.filename is not None:
            yield os.fsdecode(error.filename)


def match_local(pattern: str) -> list[FileMetadata]:
    """``FileSystems.match([pattern])``'s files for a local pattern, plus the special
    entries it drops (see the module docstring)."""
    if pattern.startswith("file://"):
        pattern = pattern[len("file://"):]
    prefix = _BEFORE_GLOB.match(pattern).group(0)
    if prefix == pattern:  # one file: as Beam, listed only if it exists
        if not os.path.lexists(pattern):
            return []
        metadata = _metadata(pattern)
        return [metadata] if metadata is not None else []
    directory = os.path.dirname(prefix)
    if not os.path.isdir(directory):
        return []
    found = (_metadata(path) for path in _walk(directory))
    filesystem = FileSystems.get_filesystem(pattern)
    return list(filesystem.match_files([m for m in found if m is not None], pattern))


def escaped(metadata: FileMetadata) -> FileMetadata:
    return FileMetadata(
        escape(metadata.path), metadata.size_in_bytes, metadata.last_updated_in_seconds
    )



def has_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def to_pattern(path: str) -> str:
    """A directory (or a bucket prefix ending in ``/``) becomes ``<dir>/**``."""
    if has_glob(path):
        return path
    if "://" in path:
        if path.endswith("/") or "/" not in path.split("://", 1)[1]:  # gs://bucket too
            return path.rstrip("/") + "/**"
        return path
    if os.path.isdir(path):
        return os.path.join(os.path.abspath(path), "**")
    return os.path.abspath(path)


class _MatchFn(beam.DoFn):
    def process(self, escaped_pattern: str):
        pattern = unescape(escaped_pattern)
        if "://" in pattern and not pattern.startswith("file://"):
            found = FileSystems.match([pattern])[0].metadata_list
        else:
            found = match_local(pattern)
        for metadata in found:
            yield escaped(metadata)


class MatchAll(beam.PTransform):
    """Escaped patterns -> FileMetadata (escaped paths) of every entry they match."""

    def expand(self, patterns):
        return patterns | beam.ParDo(_MatchFn())
