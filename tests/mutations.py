"""Mutated DICOM files for fuzzing: pydicom's test files, broken in the ways real files
break (truncated copies, flipped bits, corrupted lengths and VRs, zeroed runs).

Deterministic: the same seed gives the same cases, byte for byte.
"""

from __future__ import annotations

import os
import random
import re
import struct

from tests.conftest import CHARSET_FILES, TEST_FILES

MAX_SOURCE_BYTES = 256 * 1024
# Explicit VR codes as they appear in a header: where lengths and VRs are to corrupt.
_VR_CODES = re.compile(
    rb"(?=[\x00-\xff]{4}(AE|AS|AT|CS|DA|DS|DT|FD|FL|IS|LO|LT|OB|OD|OF|OL|OV|OW|PN|SH|SL|"
    rb"SQ|SS|ST|SV|TM|UC|UI|UL|UN|UR|US|UT|UV))"
)
MUTATIONS = ("truncate", "bitflip", "length", "vr", "zeros", "splice")


def source_files() -> list[str]:
    """pydicom's bundled files small enough to fuzz whole, sorted for determinism."""
    found = []
    for folder in (TEST_FILES, CHARSET_FILES):
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path) and os.path.getsize(path) <= MAX_SOURCE_BYTES:
                    found.append(path)
    return sorted(found)


def _header_end(data: bytes) -> int:
    """Roughly where the header ends (the pixel data tag), to aim mutations at it."""
    for marker in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        index = data.find(marker, 132)
        if index > 0:
            return index + 12
    return len(data)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    data = bytearray(data)
    end = max(1, min(len(data), _header_end(bytes(data))))
    if kind == "truncate":
        return bytes(data[: rng.randrange(0, end)])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(end)
            data[position] ^= 1 << rng.randrange(8)
        return bytes(data)
    vr_positions = [m.start() + 4 for m in _VR_CODES.finditer(bytes(data[:end]))]
    if kind == "length" and vr_positions:
        position = rng.choice(vr_positions)
        vr = bytes(data[position:position + 2])
        value = rng.choice([0xFFFF, 0xFFFE, 0x7FFF, 1, 3, rng.randrange(1 << 16)])
        if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                  b"UT", b"SV", b"UV"):
            big = rng.choice([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, rng.randrange(1 << 32)])
            data[position + 4:position + 8] = struct.pack("<L", big)
        else:
            data[position + 2:position + 4] = struct.pack("<H", value)
        return bytes(data)
    if kind == "vr" and vr_positions:
        position = rng.choice(vr_positions)
        data[position:position + 2] = rng.choice(
            [b"SQ", b"UN", b"OB", b"US", b"ZZ", b"\x00\x00", b"ox", b"UT", b"AT"]
        )
        return bytes(data)
    if kind == "splice":  # a block of the header repeated elsewhere in it
        start = rng.randrange(end)
        block = data[start:start + rng.randint(8, 256)]
        position = rng.randrange(end)
        data[position:position] = block
        return bytes(data)
    # zeros (and "length"/"vr" on a file without explicit VRs)
    position = rng.randrange(end)
    data[position:position + rng.randint(1, 64)] = bytes(rng.randint(1, 64))
    return bytes(data[: len(data)])


def write_cases(folder: str, count: int, seed: int = 12) -> dict[str, str]:
    """Write ``count`` mutated files into ``folder``; returns name -> how it was made."""
    rng = random.Random(seed)
    sources = source_files()
    contents = {path: open(path, "rb").read() for path in sources}
    os.makedirs(folder, exist_ok=True)
    made = {}
    for number in range(count):
        source = sources[number % len(sources)]
        kind = MUTATIONS[(number // len(sources)) % len(MUTATIONS)]
        mutated = mutate(contents[source], kind, rng)
        # Half of the cases keep a DICOM name: "named DICOM" changes the verdict.
        suffix = ".dcm" if number % 2 else ""
        name = f"case{number:05d}-{kind}-{os.path.basename(source)}{suffix}"
        with open(os.path.join(folder, name), "wb") as out:
            out.write(mutated)
        made[name] = f"{kind} of {os.path.basename(source)}"
    return made
