"""The base of the project's read-only, seekable binary streams.

Three readers present bytes that are not a plain local file as one: ranged reads of a
bucket object (``inputs/ranged.py``), an archive member's first bytes
(``inputs/archive_members.py``) and a file read under its limits (``inputs/limits.py``).
They share the position, the seek rule and ``readall``; each says how it reads.
"""

from __future__ import annotations

import io

# readall reads this much at a time, so reading a whole stream never asks for its size.
READALL_CHUNK = 1 << 20


def seek_position(offset: int, whence: int, position: int, size) -> int:
    """Where ``seek(offset, whence)`` goes from ``position``; ``size()``: the stream's
    size, asked only for ``SEEK_END`` (it may raise ``io.UnsupportedOperation``)."""
    if whence == io.SEEK_SET:
        target = offset
    elif whence == io.SEEK_CUR:
        target = position + offset
    elif whence == io.SEEK_END:
        target = size() + offset
    else:
        raise ValueError(f"invalid whence {whence!r}")
    if target < 0:
        raise ValueError(f"negative seek position {target}")
    return target


class ReadOnlyStream(io.RawIOBase):
    """Readable and seekable; ``position`` is where the next read starts. Subclasses
    implement ``readinto`` and, for ``SEEK_END``, ``stream_size``."""

    def __init__(self, name: str = ""):
        super().__init__()
        self.name = name
        self.position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.position

    def seek(self, offset, whence=io.SEEK_SET):
        self.position = seek_position(offset, whence, self.position, self.stream_size)
        return self.position

    def stream_size(self) -> int:
        raise io.UnsupportedOperation("this stream's size is unknown")

    def readall(self) -> bytes:
        chunks = []
        while True:
            chunk = self.read(READALL_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
