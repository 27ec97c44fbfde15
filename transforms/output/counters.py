"""Bounded counters of the report's table figures (``table_stats.py``): counts per value
and distinct values, in memory that does not grow with the rows.

* ``ValueCounts``: a counter per value, at most ``KEPT_VALUES`` distinct values; beyond
  that the least frequent half is folded into an "other values" count and flagged
  approximate.
* ``DistinctCount``: each distinct value hashed to 64 bits in a sorted numpy array, exact
  but for hash collisions; past ``EXACT_DISTINCT`` values a HyperLogLog sketch of 2^14
  one-byte registers (standard error 0.8 %), flagged as an estimate.

Both can travel as data (plain values and bytes) and merge, so that figures counted on
several workers add up (``shard_stats.py``).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow.compute as pc

KEPT_VALUES = 2000
EXACT_DISTINCT = 1 << 21
HLL_BITS = 14


class ValueCounts:
    """Counts per value, keeping at most ``2 * cap`` values between prunes."""

    def __init__(self, cap: int = KEPT_VALUES):
        self.cap = cap
        self.counts: dict[str, int] = {}
        self.other = 0  # values folded away when pruning
        self.approximate = False

    def add_array(self, array) -> None:
        if len(array) == array.null_count:
            return
        counted = pc.value_counts(array)
        for value, count in zip(counted.field("values").to_pylist(),
                                counted.field("counts").to_pylist()):
            if value is not None:
                self.add(value, count)

    def add(self, value: str, count: int = 1) -> None:
        self.counts[value] = self.counts.get(value, 0) + count
        if len(self.counts) > 2 * self.cap:
            self._prune()

    def _prune(self) -> None:
        kept = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        self.other += sum(count for _, count in kept[self.cap:])
        self.counts = dict(kept[: self.cap])
        self.approximate = True

    def most_common(self, limit: int | None = None) -> list[tuple[str, int]]:
        ordered = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return ordered if limit is None else ordered[:limit]

    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def as_dict(self) -> dict:
        return {"counts": self.most_common(), "other": self.other,
                "approximate": self.approximate}

    def as_data(self) -> dict:
        return {"cap": self.cap, "counts": dict(self.counts), "other": self.other,
                "approximate": self.approximate}

    @classmethod
    def from_data(cls, data: dict) -> "ValueCounts":
        counts = cls(data["cap"])
        counts.counts, counts.other = dict(data["counts"]), data["other"]
        counts.approximate = data["approximate"]
        return counts

    def merge(self, other: "ValueCounts") -> None:
        for value, count in other.counts.items():
            self.add(value, count)
        self.other += other.other
        self.approximate = self.approximate or other.approximate


class DistinctCount:
    """Distinct strings: an exact set of 64-bit hashes, then a HyperLogLog sketch."""

    def __init__(self, exact_limit: int = EXACT_DISTINCT, stable: bool = False):
        self.exact_limit = exact_limit
        # stable: a hash every process agrees on, so that sets counted apart can be
        # merged (shard_stats.py); hash() is salted per process, and faster.
        self.stable = stable
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted, unique
        self.pending: list[np.ndarray] = []
        self.pending_size = 0
        self.registers: np.ndarray | None = None  # the sketch, once exact_limit is passed

    def add_array(self, array) -> None:
        if len(array) == array.null_count:
            return
        values = pc.unique(array.drop_null()).to_pylist()
        # hash() of str is 64-bit SipHash, salted per process: consistent within this pass.
        hashed = np.fromiter(map(_stable_hash if self.stable else hash, values),
                             dtype=np.int64, count=len(values)).view(np.uint64)
        if self.registers is not None:
            self._sketch(hashed)
            return
        self.pending.append(hashed)
        self.pending_size += len(hashed)
        if self.pending_size > max(1 << 16, len(self.hashes)):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.hashes = np.unique(np.concatenate([self.hashes, *self.pending]))
            self.pending, self.pending_size = [], 0
        if len(self.hashes) > self.exact_limit:
            self.registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)
            self._sketch(self.hashes)
            self.hashes = np.empty(0, dtype=np.uint64)

    def _sketch(self, hashed: np.ndarray) -> None:
        index = (hashed >> np.uint64(64 - HLL_BITS)).astype(np.intp)
        rest_bits = 64 - HLL_BITS
        rest = hashed & np.uint64((1 << rest_bits) - 1)
        # rank = position of the leftmost 1 in the remaining bits (all zero: rest_bits + 1)
        with np.errstate(divide="ignore"):
            top = np.floor(np.log2(rest.astype(np.float64)))
        rank = np.where(rest == 0, rest_bits + 1, rest_bits - top).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def as_data(self) -> dict:
        self._merge()
        return {"exact_limit": self.exact_limit, "hashes": self.hashes.tobytes(),
                "registers": None if self.registers is None else self.registers.tobytes()}

    @classmethod
    def from_data(cls, data: dict) -> "DistinctCount":
        counter = cls(data["exact_limit"], stable=True)
        counter.hashes = np.frombuffer(data["hashes"], np.uint64).copy()
        if data["registers"] is not None:
            counter.registers = np.frombuffer(data["registers"], np.uint8).copy()
        return counter

    def merge(self, other: "DistinctCount") -> None:
        """Add ``other``'s values (both counted with stable hashes)."""
        other._merge()
        if other.registers is not None:
            self._merge()
            if self.registers is None:
                self.registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)
                self._sketch(self.hashes)
                self.hashes = np.empty(0, dtype=np.uint64)
            np.maximum(self.registers, other.registers, out=self.registers)
        elif self.registers is not None:
            self._sketch(other.hashes)
        else:
            self.pending.append(other.hashes)
            self.pending_size += len(other.hashes)
            self._merge()

    @property
    def estimated(self) -> bool:
        self._merge()
        return self.registers is not None

    def count(self) -> int:
        self._merge()
        if self.registers is None:
            return int(len(self.hashes))
        m = float(len(self.registers))
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.power(2.0, -self.registers.astype(np.float64))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return int(round(m * math.log(m / zeros)))  # linear counting for small sets
        return int(round(raw))


def _stable_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little", signed=True)
