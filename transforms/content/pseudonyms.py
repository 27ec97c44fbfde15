"""Keyed pseudonyms (HMAC-SHA256): the same original and key give the same pseudonym in
every file, run and machine; another key gives unrelated ones. The key itself never
leaves this object: outputs carry only ``fingerprint`` (a hash that identifies the key
without revealing it).

Each kind of value is hashed under its own label, so a Patient ID and a UID that happen
to share their text do not share a pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from transforms.inputs.storage import read_small_file

MIN_KEY_BYTES = 16
# UIDs derived from a UUID: 2.25.<the UUID as an integer> (PS3.5 B.2), at most 44 chars.
UUID_ROOT = "2.25."
# Dates are moved this many days back at least and at most (per patient).
DATE_SHIFT_DAYS = (366, 3652)
# A separator (kept as is) or a component of a path-like value.
_COMPONENT_SEPARATORS = re.compile(r"([\\/]+)|[^\\/]+")


class KeyFileError(ValueError):
    """A key file that cannot be used (missing, unreadable, too short)."""


def read_key_file(path: str) -> bytes:
    """The key in ``path`` (on this machine, ``gs://`` or ``s3://``): its bytes,
    surrounding whitespace stripped (so that ``openssl rand -hex 32 > key`` and the same
    text without newline are one key)."""
    try:
        key = read_small_file(path).strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"key file {path} holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES} "
            "(e.g. openssl rand -hex 32 > key)"
        )
    return key


class PseudonymKey:
    """This run's key, from ``--pseudonym-key-file`` or random.

    A key from a file pickles as the file's path and the key's fingerprint, and each
    worker reads the file again when it unpickles its step: the pipeline's serialized
    steps (which Dataflow stages in its bucket and Flink keeps in its blob store) hold
    no key. A key that no longer matches the fingerprint (the file changed during the
    run) is an error, not other pseudonyms under the same summary and state. A random key has no
    file, so it travels as it is (``content/settings.py`` refuses that on Dataflow).
    Never shown in a repr or a traceback."""

    def __init__(self, value: bytes | None = None, path: str | None = None,
                 fingerprint: str | None = None):
        self._value, self.path = value, path
        self.fingerprint = fingerprint or (key_fingerprint(value) if value else None)

    @classmethod
    def from_file(cls, path: str) -> "PseudonymKey":
        return cls(read_key_file(path), path)

    def value(self) -> bytes:
        if self._value is None:
            value = read_key_file(self.path)
            if key_fingerprint(value) != self.fingerprint:
                raise KeyFileError(f"key file {self.path} changed since the run started "
                                   f"(fingerprint {self.fingerprint} expected)")
            self._value = value
        return self._value

    def __getstate__(self):
        if self.path:
            return {"path": self.path, "fingerprint": self.fingerprint}
        return {"value": self._value}

    def __setstate__(self, state):
        self.__init__(state.get("value"), state.get("path"), state.get("fingerprint"))
        # Read as the worker unpickles its step: a key file gone or changed fails the
        # step there, not each file's row as if the file were at fault.
        self.value()

    def __repr__(self) -> str:
        return "PseudonymKey(***)"


def key_fingerprint(key: bytes) -> str:
    """Identifies a key (same key, same fingerprint) without revealing it."""
    return hashlib.sha256(b"dicom-meta-extract key fingerprint\0" + key).hexdigest()[:16]


def random_key() -> bytes:
    return secrets.token_bytes(32)


class Pseudonyms:
    """HMAC-SHA256 pseudonyms under one key."""

    def __init__(self, key: bytes):
        self._key = key
        self._uids: dict = {}

    def __repr__(self) -> str:  # never the key, not even in a traceback
        return f"Pseudonyms(key fingerprint {self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        """Identifies the key (same key, same fingerprint) without revealing it."""
        return key_fingerprint(self._key)

    def _digest(self, label: bytes, text: str) -> bytes:
        return hmac.new(self._key, label + b"\0" + text.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A valid UID, ``2.25.<integer>``: the first 128 bits of the HMAC as a version-8
        (custom) RFC 9562 UUID."""
        cached = self._uids.get(original)
        if cached is None:
            number = int.from_bytes(self._digest(b"uid", original)[:16], "big")
            number &= ~(0xF000 << 64)
            number |= 0x8000 << 64  # version 8
            number &= ~(0xC000 << 48)
            number |= 0x8000 << 48  # RFC variant
            cached = UUID_ROOT + str(number)
            if len(self._uids) > 1 << 16:
                self._uids.clear()
            self._uids[original] = cached
        return cached

    def patient_id(self, original: str) -> str:
        """20 upper-case hex digits (80 bits): fits LO, collision-free at archive scale."""
        return self._digest(b"patient-id", original).hex()[:20].upper()

    def path(self, original: str) -> str:
        return "anon-" + self._digest(b"path", original).hex()[:32]

    def path_components(self, original: str) -> str:
        """Each component of a path-like value (``\\`` separates a multi-valued element's
        values, ``/`` a URL's or a non-standard writer's components) replaced by
        ``path`` of that component: one folder gets one pseudonym in every value."""
        return _COMPONENT_SEPARATORS.sub(
            lambda match: match.group(0) if match.group(1) else self.path(match.group(0)),
            original,
        )

    def date_shift_days(self, patient_id: str) -> int:
        """Days (negative) every date of this patient moves by."""
        low, high = DATE_SHIFT_DAYS
        number = int.from_bytes(self._digest(b"date-shift", patient_id)[:8], "big")
        return -(low + number % (high - low + 1))
