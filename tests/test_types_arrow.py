"""The Parquet writer's Arrow conversion (``ColumnConverter.convert_arrow``) against its
reference, ``ColumnConverter.convert`` (Python's int/float per value): the same values,
nulls and count of values that do not parse, for scalar and list columns of every
number VR and of text, on random texts built to hit every rule (signs, exponents,
empty items, bounded cells, padding, words, overflow, non-ASCII digits)."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import pytest

from transforms.output.types import ColumnConverter

NUMBERS = ["0", "1", "-1", "+1", "007", ".5", "5.", "-0", "-0.0", "1e5", "1E-5", "+.5e+3",
           "3.14159265358979323846", "1e309", "-1e-400", "9223372036854775807",
           "-9223372036854775808", "123456789012345678901234567890.5"]
NOT_NUMBERS = ["", " 1", "1 ", "abc", "1.2.3", "e5", "1e", "--1", "0x10", "nan", "inf",
               "-inf", "NaN", "Infinity", "1_000", "\u00b2", "1,5", "<5 values>",
               "<x values>", "."]
# What Arrow refuses, so that the whole batch goes to convert: out of int64, non-ASCII.
RARE = ["9223372036854775808", "123456789012345678901234567890", "\u0661\u0662"]


def one_value(generator: random.Random) -> str:
    if generator.random() < 0.01:
        return generator.choice(RARE)
    return generator.choice(NUMBERS * 3 + NOT_NUMBERS)


def text(generator: random.Random, allow_lists: bool) -> str:
    if allow_lists and generator.random() < 0.5:
        return "\\".join(one_value(generator) for _ in range(generator.randint(1, 5)))
    return one_value(generator)


def plain(values: list) -> list:
    """Floats by repr (NaN equals NaN, -0.0 differs from 0.0), lists item by item."""
    def one(value):
        if isinstance(value, float):
            return "nan" if math.isnan(value) else repr(value)
        if isinstance(value, list):
            return [one(item) for item in value]
        return value
    return [one(value) for value in values]


@pytest.mark.parametrize("arrow_type, vrs", [
    (pa.float64(), {"DS"}), (pa.float64(), {"FD"}), (pa.float64(), {"DS", "FL"}),
    (pa.int64(), {"IS"}), (pa.int64(), {"US", "SS"}),
    (pa.list_(pa.float64()), {"DS"}), (pa.list_(pa.float64()), {"FL"}),
    (pa.list_(pa.int64()), {"IS"}),
    (pa.string(), {"LO"}), (pa.list_(pa.string()), {"CS"}),
])
def test_arrow_conversion_equals_python(arrow_type, vrs):
    converter = ColumnConverter(arrow_type, vrs)
    generator = random.Random(str(arrow_type) + str(sorted(vrs)))
    lists = pa.types.is_list(arrow_type)
    used = 0
    for _ in range(300):
        texts = [text(generator, lists) for _ in range(generator.randint(1, 40))]
        texts = [value for value in texts if value] or ["1"]  # shards hold no empty text
        expected, expected_bad = converter.convert(texts)
        # As the table writer passes them: a slice of a larger array.
        padded = pa.array(["x"] * 7 + texts + ["y"] * 3, pa.large_string())
        got = converter.convert_arrow(padded.slice(7, len(texts)))
        if got is None:  # Arrow refused (non-ASCII, out of range): convert is used
            continue
        used += 1
        array, bad = got
        assert array.type == arrow_type
        assert plain(array.to_pylist()) == plain(expected.to_pylist()), texts
        assert bad == expected_bad, texts
    assert used > 100  # batches with an out-of-range or non-ASCII value fall back


def test_out_of_range_and_non_ascii_fall_back():
    ints = ColumnConverter(pa.int64(), {"IS"})
    assert ints.convert_arrow(pa.array(["1", "99999999999999999999"], pa.large_string())) is None
    floats = ColumnConverter(pa.float64(), {"DS"})
    assert floats.convert_arrow(pa.array(["1", "\u0661"], pa.large_string())) is None
    dates = ColumnConverter(pa.date32(), {"DA"})
    assert dates.convert_arrow(pa.array(["20200101"], pa.large_string())) is None
