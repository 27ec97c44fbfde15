"""Special files: only regular files are ever opened.

A named pipe blocks whoever opens it, a device may have side effects when opened (a
tape rewinds), a socket cannot be opened at all, and broken symbolic links and link
loops cannot be read. Each of them is a *skip* with a reason, decided with ``stat``
(and ``lstat`` for links) before anything is opened. ``open_regular`` then opens with
``O_NONBLOCK`` and checks the opened descriptor again, so a file swapped for a pipe
between the check and the open still cannot block the worker.

Paths here are local and real (unescaped, see ``transforms.common.paths``).
"""

from __future__ import annotations

import errno
import os
import stat


class SpecialFile(Exception):
    """A path that is not a regular file; ``reason`` says what it is."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "directory"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def special_file_reason(path: str) -> str | None:
    """None for a regular file (or a link to one); otherwise why it is not read.

    Raises OSError for a file that cannot even be looked at (vanished, no permission on
    its folder): that is an error, not a skip."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop: never resolves to a file, not opened"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            return f"broken symbolic link to {os.readlink(path)!r}: its target does not exist"
        raise
    if stat.S_ISREG(info.st_mode):
        return None
    kind = _kind(info.st_mode)
    if os.path.islink(path):
        if kind == "directory":
            return "symbolic link to a directory: not followed"
        return f"symbolic link to a {kind}: not a regular file, not opened"
    if kind == "directory":
        try:
            os.listdir(path)
        except OSError as exc:
            return f"directory that cannot be listed: {exc.strerror or exc}"
        return "directory: not a file"
    return f"{kind}: not a regular file, not opened"


def open_regular(path: str):
    """A buffered binary stream over ``path``, which must be a regular file.

    Raises ``SpecialFile`` if it is not (checked on the opened descriptor, without
    ever blocking)."""
    reason = special_file_reason(path)
    if reason is not None:
        raise SpecialFile(reason)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecialFile(f"{_kind(info.st_mode)}: not a regular file, not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
