"""``json_text.loads`` (orjson, else ``json.loads``) gives what ``json.loads`` gives: on
every JSON line of pydicom's test files and of a generated archive, and on the texts
where orjson alone would not (NaN, infinities, lone surrogates, integers past 64 bits)."""

from __future__ import annotations

import json
import os

import orjson
import pytest

from benchmarks.make_archive import generate
from tests.test_json_values import PYDICOM_FILES, json_lines
from transforms.common import json_text
from transforms.reading.flatten import FlattenSettings


def same(left, right) -> bool:
    """Equal, with the same types and key order, and -0.0 apart from 0.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return repr(left) == repr(right)
    return left == right


@pytest.fixture
def orjson_calls(monkeypatch):
    calls = []
    parse = orjson.loads

    def counted(data):
        calls.append(data)
        return parse(data)

    monkeypatch.setattr(json_text.orjson, "loads", counted)
    return calls


def test_every_dicom_json_line_reads_as_json_reads_it(tmp_path, orjson_calls):
    generate(str(tmp_path), 40, small=True, seed=3)
    paths = PYDICOM_FILES + sorted(os.path.join(folder, name)
                                   for folder, _, names in os.walk(tmp_path) for name in names)
    texts = [line for line in json_lines(paths, FlattenSettings(dicom_json=True)).values()
             if isinstance(line, str)]  # not the skipped and failed files' records
    assert len(texts) > 100
    for text in texts:
        assert same(json_text.loads(text), json.loads(text)), text[:200]
    # The fast way is the common one (UIDs' long digit runs are inside strings).
    assert len(orjson_calls) > 0.9 * len(texts)


@pytest.mark.parametrize("text", [
    '{"00280030":{"vr":"FD","Value":[NaN,Infinity,-Infinity]}}',
    '{"x":[1e400]}',
    '{"00200013":{"vr":"IS","Value":[12345678901234567890123]}}',
    '{"x":[-9223372036854775809]}',
    '{"x":[1,18446744073709551616]}',
    '{"x":[9223372036854775807,-9223372036854775808]}',  # 19 digits: json, to be sure
    '{"x": 99999999999999999999}',
    '12345678901234567890123',
    '-12345678901234567890123',
    '{"x":"\ud800"}',
])
def test_what_orjson_reads_otherwise_goes_to_json(text):
    result = json_text.loads(text)
    assert same(result, json.loads(text))


@pytest.mark.parametrize("text", [
    '{"0020000D":{"vr":"UI","Value":["2.25.123456789012345678901234567890123"]}}',
    '{"x":[922337203685477580,-922337203685477580,0.1,-0.0,5e-324,1.5e300]}',
    '{"x":"a, 1234"}',
])
def test_plain_json_goes_the_fast_way(text, orjson_calls):
    assert same(json_text.loads(text), json.loads(text))
    assert len(orjson_calls) == 1
