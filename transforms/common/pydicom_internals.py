"""The one place this project touches pydicom's internals.

``flatten.parse_sequence`` reads a sequence's items as pydicom's ``read_sequence_item``
does, without building a ``Dataset`` per item; to decide each item's VR encoding exactly
as pydicom does, it asks pydicom's own (private) ``filereader._is_implicit_vr``.
``tests/test_pydicom_internals.py`` fails loudly when pydicom changes its signature or
what it answers for an item.
"""

from __future__ import annotations

from typing import BinaryIO

from pydicom.filereader import _is_implicit_vr


def item_is_implicit_vr(fp: BinaryIO, implicit: bool, little_endian: bool) -> bool:
    """Whether the sequence item starting at ``fp``'s position is in implicit VR, as
    pydicom decides it (an item may switch from explicit to implicit VR); reads ``fp``
    on (the caller seeks back)."""
    return _is_implicit_vr(fp, implicit, little_endian, None, is_sequence=True)
