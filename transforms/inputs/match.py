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

Bucket patterns go to ``FileSystems.match`` unchanged. A local walk is split into
folders (``split_walk``) that the workers walk in parallel: one process walking a
million files would keep the other cores waiting.
"""

from __future__ import annotations

import collections
import os
import re

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.common.paths import escape, unescape
from transforms.common.tags import FOLDERS

_BEFORE_GLOB = re.compile(r"^[^[*?]*")
# Folders a local walk is split into, breadth-first, before the workers walk each one:
# enough for every worker of a large machine, few enough to list in the first step.
WALK_FOLDERS = 256


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


def split_walk(directory: str, folders: int = WALK_FOLDERS) -> tuple[list[str], list[str]]:
    """``(entries, subfolders)``: ``directory`` listed breadth-first until there are
    ``folders`` subfolders still to walk (or none). ``entries`` are what ``_walk`` lists
    in the folders listed so far; with ``_walk`` of each subfolder they are exactly what
    ``_walk(directory)`` lists, in another order."""
    entries: list[str] = []
    queue = collections.deque([directory])
    while queue and len(queue) < folders:
        folder = queue.popleft()
        try:
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError as error:  # as os.walk's onerror: the folder itself is listed
            if error.filename is not None:
                entries.append(os.fsdecode(error.filename))
            continue
        for item in items:
            path = os.path.join(folder, item.name)
            try:
                descend = item.is_dir() and not item.is_symlink()
            except OSError:
                descend = False
            # Files, special files and links (to folders too, never followed) are entries.
            (queue.append if descend else entries.append)(path)
    return entries, list(queue)


def _local_pattern(pattern: str) -> tuple[str, str | None]:
    """``(pattern, directory to walk)``; no directory for a single file's pattern."""
    if pattern.startswith("file://"):
        pattern = pattern[len("file://"):]
    prefix = _BEFORE_GLOB.match(pattern).group(0)
    if prefix == pattern:
        return pattern, None
    return pattern, os.path.dirname(prefix)


def _matching(pattern: str, paths) -> list[FileMetadata]:
    found = (_metadata(path) for path in paths)
    filesystem = FileSystems.get_filesystem(pattern)
    return list(filesystem.match_files([m for m in found if m is not None], pattern))


def _one_file(pattern: str) -> list[FileMetadata]:
    if not os.path.lexists(pattern):  # as Beam, listed only if it exists
        return []
    metadata = _metadata(pattern)
    return [metadata] if metadata is not None else []


def match_local(pattern: str) -> list[FileMetadata]:
    """``FileSystems.match([pattern])``'s files for a local pattern, plus the special
    entries it drops (see the module docstring), in one process."""
    pattern, directory = _local_pattern(pattern)
    if directory is None:
        return _one_file(pattern)
    if not os.path.isdir(directory):
        return []
    return _matching(pattern, _walk(directory))


def plan_local(pattern: str, folders: int = WALK_FOLDERS):
    """``(FileMetadata found while splitting, subfolders to walk)`` of a local pattern:
    ``match_local``'s files are the first plus ``walk_folder`` of each subfolder."""
    pattern, directory = _local_pattern(pattern)
    if directory is None:
        return _one_file(pattern), []
    if not os.path.isdir(directory):
        return [], []
    entries, subfolders = split_walk(directory, folders)
    return _matching(pattern, entries), subfolders


def walk_folder(pattern: str, folder: str) -> list[FileMetadata]:
    """The files under ``folder`` (one of ``plan_local``'s) that ``pattern`` matches."""
    pattern, _ = _local_pattern(pattern)
    return _matching(pattern, _walk(folder))


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
    """Escaped pattern -> FileMetadata of a bucket's objects, or of a local walk's files
    found while splitting it; the folders still to walk go to ``FOLDERS``."""

    def __init__(self, folders: int = WALK_FOLDERS):
        self.folders = folders

    def process(self, escaped_pattern: str):
        pattern = unescape(escaped_pattern)
        if "://" in pattern and not pattern.startswith("file://"):
            found, subfolders = FileSystems.match([pattern])[0].metadata_list, []
        else:
            found, subfolders = plan_local(pattern, self.folders)
        for metadata in found:
            yield escaped(metadata)
        for folder in subfolders:
            yield beam.pvalue.TaggedOutput(FOLDERS, (escaped_pattern, escape(folder)))


def _walk_escaped(pattern_folder):
    pattern, folder = pattern_folder
    for metadata in walk_folder(unescape(pattern), unescape(folder)):
        yield escaped(metadata)


class MatchAll(beam.PTransform):
    """Escaped patterns -> FileMetadata (escaped paths) of every entry they match; local
    folders are walked in parallel, one subfolder per element."""

    def __init__(self, folders: int = WALK_FOLDERS):
        super().__init__()
        self.folders = folders

    def expand(self, patterns):
        listed = patterns | "List" >> beam.ParDo(_MatchFn(self.folders)).with_outputs(
            FOLDERS, main="files")
        walked = (
            listed[FOLDERS]
            | "SpreadFolders" >> beam.Reshuffle()
            | "Walk" >> beam.FlatMap(_walk_escaped)
        )
        return (listed.files, walked) | "AllFiles" >> beam.Flatten()
