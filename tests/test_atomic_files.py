"""Whole-or-nothing writes (transforms/common/atomic_files.py), the one helper the summary,
the errors/skips CSVs, the report and the state records write with."""

from __future__ import annotations

import os
import re

import pytest

from transforms.common.atomic_files import partial_path, write_atomically


def test_partial_names_are_unique_per_attempt_and_end_in_partial(tmp_path):
    path = str(tmp_path / "scan.summary.json")
    names = {partial_path(path) for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(re.escape(path) + r"\.[0-9a-f]{12}\.partial", name) for name in names)


def test_a_write_replaces_the_file_whole_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "scan.report.html"
    write_atomically(str(path), b"first")
    write_atomically(str(path), b"second")  # a repeated step writes again
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["scan.report.html"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_partial(tmp_path):
    path = tmp_path / "scan.errors.csv"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(str(path), "not bytes")  # fails inside the write
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["scan.errors.csv"]
