"""``--column-names keyword``: the tables' columns named by DICOM keyword, in names every
warehouse takes as they are.

Rows, shards and state keep the seed names (``Patient's Name (0010,0010)``, nested
``A (gggg,eeee) [2] - B (gggg,eeee)``, ``... #items``, private ``[CREATOR] ...
(gggg,eeee)``); only the table writers rename, so ``--incremental`` reuses the same
shards whichever naming a run asks for.

A keyword name is made of letters, digits and underscores, starts with a letter and
has at most 300 characters: valid as it is for BigQuery (which also compares names
case-insensitively), Delta Lake without column mapping, Spark, DuckDB and pandas::

    Patient's Name (0010,0010)                           PatientName
    Unknown (0019,0001) / a keyword-less public tag      Tag_00190001
    Private Creator (0029,0010)                          PrivateCreator_00290010
    [SIEMENS CSA HEADER] CSA Image Header Info (0029,1010)
                                                         Private_00291010_SIEMENS_CSA_HEADER
    [Unknown Creator] (0029,1010)                        Private_00291010
    A Sequence (gggg,eeee) - B (gggg,eeee)               ASequence__B        (first item)
    A Sequence (gggg,eeee) [2] - B (gggg,eeee)           ASequence_2__B      (item 2)
    A Sequence (gggg,eeee) #items                        ASequence_items

Nesting levels are joined with ``__`` and an item index follows its sequence after one
``_`` (``.`` and ``[k]`` would be neither valid in BigQuery nor safe in Spark, which
reads ``.`` as a struct field). Keywords hold no underscore and creators' runs of
other characters become one ``_``, so ``__`` only ever separates levels. The first
item has no index, as in the seed names.

Two columns whose keyword names would be equal ignoring case (two creators that differ
only in punctuation or case), or a name longer than 300 characters, get the first
characters and ``_`` + 8 hex digits of a hash of the seed name: the same seed name
always gets the same keyword name, whatever the order of the columns.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache

import pyarrow as pa
from pydicom.datadict import keyword_for_tag

from transforms.common.rows import PATH_COLUMN

SEED = "seed"
KEYWORD = "keyword"
NAMINGS = (SEED, KEYWORD)
MAX_NAME_CHARS = 300  # BigQuery's limit; Delta, Spark and DuckDB allow more
LEVEL_SEPARATOR = "__"
VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")

# One nesting level of a seed name: its text up to the tag, the tag, an optional item
# index, then " - " and the next level; the last level may end in " #items".
_LEVEL = re.compile(
    r"(?P<text>.*?)\((?P<group>[0-9A-F]{4}),(?P<element>[0-9A-F]{4})\)"
    r"(?:(?: \[(?P<item>\d+)\])? - |(?P<count> #items)?$)",
    re.DOTALL,
)
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9]+")


def _creator(text: str) -> str:
    """The creator part of a private level's text ``[CREATOR] description ``: its
    letters and digits, other runs as ``_``; empty when unknown."""
    if not text.startswith("[") or text.startswith("[Unknown Creator] "):
        return ""
    end = text.rfind("] ")
    return _NOT_NAME_CHARS.sub("_", text[1:end]).strip("_") if end > 0 else ""


def _level_name(text: str, tag: int) -> str:
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 0:
        return keyword_for_tag(tag) or f"Tag_{tag:08X}"
    if 0x10 <= element <= 0xFF:
        return f"PrivateCreator_{tag:08X}"
    creator = _creator(text)
    return f"Private_{tag:08X}_{creator}" if creator else f"Private_{tag:08X}"


@lru_cache(maxsize=1 << 16)
def keyword_name(seed: str) -> str:
    """The keyword form of one seed column name, before collisions are resolved."""
    if seed == PATH_COLUMN:
        return seed
    parts, position = [], 0
    while position < len(seed):
        match = _LEVEL.match(seed, position)
        if match is None:  # not a name this tool writes: keep it recognisable, valid
            parts.append(_NOT_NAME_CHARS.sub("_", seed[position:]).strip("_") or "Column")
            break
        tag = int(match["group"], 16) << 16 | int(match["element"], 16)
        name = _level_name(match["text"], tag)
        if match["item"]:
            name += f"_{int(match['item'])}"
        if match["count"]:
            name += "_items"
        parts.append(name)
        position = match.end()
    name = LEVEL_SEPARATOR.join(parts)
    return name if name[:1].isalpha() or name[:1] == "_" else "C_" + name


def _hashed(name: str, seed: str) -> str:
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[:MAX_NAME_CHARS - 9]}_{digest}"


def keyword_names(seeds: list[str]) -> list[str]:
    """The keyword names of a table's columns, in the same order, all distinct ignoring
    case and valid (``VALID_NAME``)."""
    names = [keyword_name(seed) for seed in seeds]
    shared = Counter(name.lower() for name in names)
    names = [
        _hashed(name, seed) if shared[name.lower()] > 1 or len(name) > MAX_NAME_CHARS else name
        for name, seed in zip(names, seeds)
    ]
    if len({name.lower() for name in names}) != len(names):  # a hash collision: 2^-32
        raise ValueError("keyword column names collide")
    return names


def output_names(seeds: list[str], naming: str) -> list[str]:
    """The names a table is written with under ``--column-names naming``."""
    if naming == KEYWORD:
        return keyword_names(seeds)
    if naming != SEED:
        raise ValueError(f"unknown column naming {naming!r}")
    return list(seeds)


def renamed(schema: pa.Schema, names: list[str]) -> pa.Schema:
    """``schema`` with its fields named ``names``, types and metadata kept."""
    return pa.schema([field.with_name(name) for field, name in zip(schema, names)],
                     metadata=schema.metadata)
