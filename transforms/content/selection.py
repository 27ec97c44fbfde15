"""Tag selection: which elements become columns (``--tags`` / ``--exclude-tags``).

An entry names one element or a set of them:

* a keyword (``PatientID``) or a tag (``(0010,0020)``, ``00100020``), from pydicom's
  dictionary;
* a group or tag wildcard, ``x`` standing for any hex digit (``(0029,xxxx)``, ``60xx0010``);
* a private creator block (``[SIEMENS CSA HEADER]``): that creator's elements and its
  Private Creator element, in any odd group;
* a nested path, segments joined by ``.`` (``ReferencedImageSequence.ReferencedSOPInstanceUID``);
  every segment but the last must be a sequence.

An entry without ``.`` names elements of the top level (the dataset and its File Meta),
not copies nested in sequences. Selecting a sequence keeps its items whole; a nested path
keeps only that element of the items. Exclusion wins over selection. ``DicomPath`` is
always kept.

The selection is applied by the flatten walker before an element is converted, so an
unselected element (or a whole unselected sequence) is never decoded: ``Selection.root()``
gives the top level's ``Selector``, and ``Selector.select`` the one of each element's
items (``None`` once everything below is kept).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from transforms.common.private_tags import creator_tag, creator_text, is_private_creator

# ``Selector.select`` result for an element that is not a column.
SKIPPED = object()

_TAG_PATTERN = re.compile(r"^\(([0-9A-Fa-fxX]{4}),([0-9A-Fa-fxX]{4})\)$|^([0-9A-Fa-fxX]{8})$")
_KEYWORD_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class SelectionError(ValueError):
    """An entry that is not a keyword, tag, wildcard, creator block or path of them."""


# ---------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Segment:
    """One step of an entry: ``value``/``mask`` over the 32-bit tag, or a creator."""

    value: int = 0
    mask: int = 0xFFFFFFFF
    creator: str | None = None

    @property
    def is_exact(self) -> bool:
        return self.creator is None and self.mask == 0xFFFFFFFF

    def matches(self, tag: int, creator: str | None) -> bool:
        if self.creator is not None:
            return creator == self.creator
        return tag & self.mask == self.value


def _split_path(entry: str) -> list[str]:
    """``A.[creator.with.dots].B`` -> segments; dots inside ``[...]`` do not split."""
    segments, current, depth = [], [], 0
    for char in entry:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "." and depth == 0:
            segments.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    segments.append("".join(current).strip())
    return segments


def _hex_pattern(digits: str) -> tuple[int, int]:
    value = mask = 0
    for char in digits:
        value <<= 4
        mask <<= 4
        if char not in "xX":
            value |= int(char, 16)
            mask |= 0xF
    return value, mask


def parse_segment(text: str, entry: str) -> Segment:
    if text.startswith("[") and text.endswith("]"):
        creator = text[1:-1].strip()
        if not creator or "[" in creator or "]" in creator:
            raise SelectionError(f"{entry!r}: empty or malformed private creator block")
        return Segment(creator=creator)
    match = _TAG_PATTERN.match(text)
    if match:
        digits = match.group(3) or match.group(1) + match.group(2)
        value, mask = _hex_pattern(digits)
        return Segment(value, mask)
    if _KEYWORD_PATTERN.match(text):
        tag = tag_for_keyword(text)
        if tag is None:
            close = difflib.get_close_matches(text, keyword_dict.keys(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SelectionError(f"{entry!r}: unknown keyword {text!r}{hint}")
        return Segment(tag)
    raise SelectionError(
        f"{entry!r}: not a keyword, a tag such as (0010,0020) or 00100020, a wildcard "
        "such as (0029,xxxx), a private creator block such as [SIEMENS CSA HEADER], "
        "or a path of them joined by '.'"
    )


def _is_known_non_sequence(segment: Segment) -> bool:
    if not segment.is_exact:
        return False
    try:
        return dictionary_VR(segment.value) != "SQ"
    except KeyError:  # private or unknown: cannot tell
        return False


def parse_entry(entry: str) -> tuple[Segment, ...]:
    texts = _split_path(entry.strip())
    if any(not text for text in texts):
        raise SelectionError(f"{entry!r}: empty segment in a path")
    segments = tuple(parse_segment(text, entry) for text in texts)
    for text, segment in zip(texts[:-1], segments[:-1]):
        if _is_known_non_sequence(segment):
            raise SelectionError(f"{entry!r}: {text} is not a sequence")
    return segments


def split_entries(text: str) -> list[str]:
    """``a,b,c`` or ``@FILE`` (one entry per line, ``#`` comments) -> entries."""
    text = text.strip()
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SelectionError(f"cannot read tag list {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        entries = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(line)
        if not entries:
            raise SelectionError(f"tag list {path} names no entry")
        return entries
    entries = [part.strip() for part in _split_commas(text)]
    if not any(entries):
        raise SelectionError("empty tag list")
    if not all(entries):
        raise SelectionError(f"{text!r}: empty entry in the list")
    return entries


def _split_commas(text: str) -> list[str]:
    """Commas split entries, except inside ``(gggg,eeee)`` and ``[creator]``."""
    parts, current, depth = [], [], 0
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_tag_list(text: str) -> tuple[str, ...]:
    """Validated entries of a ``--tags`` value, in their given form (raises SelectionError)."""
    entries = split_entries(text)
    for entry in entries:
        parse_entry(entry)
    return tuple(entries)


# ---------------------------------------------------------------------------
# Matching


class _Trie:
    """Entries as a tree of segments; ``leaf``: an entry ends here (all below kept)."""

    __slots__ = ("exact", "patterns", "leaf")

    def __init__(self):
        self.exact: dict[int, _Trie] = {}
        self.patterns: list[tuple[Segment, _Trie]] = []
        self.leaf = False

    def add(self, segments: tuple[Segment, ...]) -> None:
        node = self
        for segment in segments:
            if segment.is_exact:
                node = node.exact.setdefault(segment.value, _Trie())
            else:
                for known, child in node.patterns:
                    if known == segment:
                        node = child
                        break
                else:
                    child = _Trie()
                    node.patterns.append((segment, child))
                    node = child
        node.leaf = True

    @property
    def needs_creator(self) -> bool:
        return any(segment.creator is not None for segment, _ in self.patterns)

    def children(self, tag: int, creator: str | None) -> "_Trie | None":
        """The entries' continuation below element ``tag`` (several merged), or None."""
        found = []
        child = self.exact.get(tag)
        if child is not None:
            found.append(child)
        for segment, child in self.patterns:
            if segment.matches(tag, creator):
                found.append(child)
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        merged = _Trie()
        for child in found:
            merged.leaf = merged.leaf or child.leaf
            for key, grandchild in child.exact.items():
                merged.exact[key] = (
                    _merge(merged.exact[key], grandchild) if key in merged.exact else grandchild
                )
            merged.patterns.extend(child.patterns)
        return merged


def _merge(first: _Trie, second: _Trie) -> _Trie:
    merged = _Trie()
    merged.leaf = first.leaf or second.leaf
    merged.exact = dict(first.exact)
    for key, child in second.exact.items():
        merged.exact[key] = _merge(merged.exact[key], child) if key in merged.exact else child
    merged.patterns = first.patterns + second.patterns
    return merged


def creator_of(tag: int, dataset) -> str | None:
    """Private creator of a private element (of itself for a Private Creator element)."""
    reserving = tag if is_private_creator(tag) else creator_tag(tag)
    if reserving is None or reserving not in dataset:
        return None
    if hasattr(dataset, "get_item"):
        raw = dataset.get_item(reserving)
    else:  # an item of a parsed sequence: raw elements only
        raw = dataset[reserving]
    return creator_text(raw.value)


class Selector:
    """The selection at one level of the dataset: ``inc`` what is selected there
    (None: everything), ``exc`` what is excluded there (None: nothing)."""

    __slots__ = ("inc", "exc", "required", "_by_tag", "_creators")

    def __init__(self, inc: _Trie | None, exc: _Trie | None, required=frozenset()):
        self.inc = inc
        self.exc = exc
        self.required = required  # tags read even when not selected (top level only)
        self._by_tag: dict = {}
        self._creators = (inc is not None and inc.needs_creator) or (
            exc is not None and exc.needs_creator
        )

    def select(self, tag: int, dataset):
        """SKIPPED, or the Selector for the element's items (None: all of them)."""
        tag &= 0xFFFFFFFF
        private = (tag >> 16) & 1
        if not (private and self._creators):
            cached = self._by_tag.get(tag, self)
            if cached is not self:
                return cached
            result = self._select(tag, None)
            self._by_tag[tag] = result
            return result
        return self._select(tag, creator_of(tag, dataset))

    def _select(self, tag: int, creator: str | None):
        if tag in self.required:
            return None
        exc = self.exc.children(tag, creator) if self.exc is not None else None
        if exc is not None and exc.leaf:
            return SKIPPED
        if self.inc is None:
            inc = None
        else:
            inc = self.inc.children(tag, creator)
            if inc is None:
                return SKIPPED
            if inc.leaf:
                inc = None
        if inc is None and exc is None:
            return None
        return Selector(inc, exc)


@dataclass(frozen=True)
class Selection:
    """``--tags`` and ``--exclude-tags`` entries, as given (validated)."""

    tags: tuple = ()
    exclude_tags: tuple = ()
    # Top-level tags read even when unselected (de-identification needs Patient ID);
    # the content step drops them again.
    required: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.tags or self.exclude_tags)

    @functools.cached_property
    def _tries(self) -> tuple:
        inc = None
        if self.tags:
            inc = _Trie()
            for entry in self.tags:
                inc.add(parse_entry(entry))
        exc = None
        if self.exclude_tags:
            exc = _Trie()
            for entry in self.exclude_tags:
                exc.add(parse_entry(entry))
        return inc, exc

    def root(self) -> Selector:
        """The top level's Selector; one per Selection, so that every file reuses the
        per-tag decisions it caches."""
        return self._root

    @functools.cached_property
    def _root(self) -> Selector:
        inc, exc = self._tries
        return Selector(inc, exc, frozenset(self.required))

    def selects_top_level(self, tag: int) -> bool:
        """Would ``tag`` (public) be a column at the top level without ``required``?"""
        inc, exc = self._tries
        return Selector(inc, exc).select(tag, {}) is not SKIPPED

    @property
    def reads_private(self) -> bool:
        """Does any selected entry name private elements (odd group or creator block)?"""
        for entry in self.tags:
            for segment in parse_entry(entry):
                if segment.creator is not None or (
                    segment.mask & 0x00010000 and segment.value & 0x00010000
                ) or not segment.mask & 0x00010000:
                    return True
        return False

    def __getstate__(self):
        # The tries are rebuilt where needed; pickled settings stay small.
        return {"tags": self.tags, "exclude_tags": self.exclude_tags, "required": self.required}

    def __setstate__(self, state):
        for key, value in state.items():
            object.__setattr__(self, key, value)
