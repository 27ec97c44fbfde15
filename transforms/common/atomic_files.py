"""Whole-or-nothing writes through Beam's ``FileSystems`` (local or bucket): small files
written at once (the summary, the errors and skips CSVs, the HTML report, state
records), and large ones streamed to an attempt's own name, then renamed into place
(:func:`finalize_tables`, as Beam's ``FileBasedSink`` finalizes).

The bytes go to a name unique to the attempt, ``{path}.{12 hex digits}.partial``, which is
then renamed over ``path``: a reader sees the old file or the new one, a retried or
repeated step simply writes again, and two attempts never write into the same file. A
failed write removes its temporary file; a killed one leaves a ``*.partial`` (inside a
state generation, cleanup deletes it). A large file written in parts by several workers
is joined into one temporary file before it is renamed: on a local disk each part is
copied into its place by a worker of its own (:func:`reserve`, :func:`place`), elsewhere
the parts stream into one object (:func:`concatenate`).
"""

from __future__ import annotations

import errno
import os
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str) -> str:
    """The temporary name of one attempt's write of ``path``."""
    return f"{path}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}"


def open_write(path: str):
    """A new file's writable stream, bytes as given (no compression by suffix)."""
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


COPY_BLOCK = 8 << 20  # bytes per read when parts are copied through a stream


def is_local(path: str) -> bool:
    return "://" not in path


def reserve(target: str, size: int) -> None:
    """Make the local file ``target`` (new, or holding the first part) ``size`` bytes
    long, for parts placed into it at their offsets by several workers at once
    (:func:`place`)."""
    with open(target, "ab") as out:
        out.truncate(size)


def place(source: str, target: str, offset: int) -> int:
    """Copy the local file ``source`` into the local file ``target`` at ``offset``; the
    same bytes again if repeated. Returns the bytes copied."""
    size = os.path.getsize(source)
    with open(source, "rb") as part, open(target, "r+b") as out:
        copied = _kernel_copy(part.fileno(), out.fileno(), size, offset)
        while copied < size:  # where the kernel cannot copy between these files
            block = os.pread(part.fileno(), min(COPY_BLOCK, size - copied), copied)
            if not block:
                raise OSError(f"{source}: ended at {copied} of {size} bytes")
            copied += os.pwrite(out.fileno(), block, offset + copied)
    return copied


def _kernel_copy(source: int, target: int, size: int, offset: int) -> int:
    """``os.copy_file_range`` (no bytes through this process) as far as it goes."""
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(source, target, size - copied, copied, offset + copied)
            if not step:
                break
            copied += step
    except (AttributeError, OSError) as exc:  # an old kernel or Python, or across disks
        if isinstance(exc, OSError) and exc.errno not in _NO_KERNEL_COPY:
            raise
    return copied


_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                             errno.EBADF})


def concatenate(sources: list, target: str) -> int:
    """Write the bytes of ``sources``, in order, to the new file ``target`` through Beam's
    ``FileSystems`` (any bucket), a block at a time; returns its size."""
    written = 0
    with open_write(target) as out:
        for source in sources:
            with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as part:
                while block := part.read(COPY_BLOCK):
                    out.write(block)
                    written += len(block)
    return written


def finalize_tables(renames: dict) -> None:
    """``{temp: final}`` renamed into place; a temp already gone whose final exists was
    renamed by an earlier attempt of this step."""
    for temp, final in sorted(renames.items()):
        if FileSystems.exists(temp):
            FileSystems.rename([temp], [final])
        elif not FileSystems.exists(final):
            raise FileNotFoundError(f"neither {temp} nor {final} exists")


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: under :func:`partial_path`, then renamed."""
    temp = partial_path(path)
    try:
        with open_write(temp) as out:
            out.write(data)
        FileSystems.rename([temp], [path])
    except BaseException:
        try:
            if FileSystems.exists(temp):
                FileSystems.delete([temp])
        except Exception:  # pylint: disable=broad-except  # the write's own error matters
            pass
        raise
