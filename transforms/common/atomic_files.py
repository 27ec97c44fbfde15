"""Whole-or-nothing writes through Beam's ``FileSystems`` (local or bucket): small files
written at once (the summary, the errors and skips CSVs, the HTML report, state
records), and large ones streamed to an attempt's own name, then renamed into place
(:func:`finalize_tables`, as Beam's ``FileBasedSink`` finalizes).

The bytes go to a name unique to the attempt, ``{path}.{12 hex digits}.partial``, which is
then renamed over ``path``: a reader sees the old file or the new one, a retried or
repeated step simply writes again, and two attempts never write into the same file. A
failed write removes its temporary file; a killed one leaves a ``*.partial`` (inside a
state generation, cleanup deletes it).
"""

from __future__ import annotations

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
