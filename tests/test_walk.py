"""The local walk split into folders that workers walk in parallel: the same entries as
one walk, special ones included, whatever the number of folders it is split into."""

from __future__ import annotations

import os
import socket

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from transforms.common.paths import escape
from transforms.inputs.match import MatchAll, match_local, plan_local, walk_folder


def _tree(root):
    for name in ("a.dcm", "b.txt", "p1/s1/c.dcm", "p1/s1/d", "p1/s2/e.dcm", "p2/f.dcm",
                 "p2/x[1].dcm", "p3/deep/er/g.dcm", os.fsdecode(b"p4/caf\xe9.dcm")):
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(b"x" * len(name))
    os.makedirs(os.path.join(root, "empty", "inner"))
    os.symlink(os.path.join(root, "p1"), os.path.join(root, "p2", "link-to-folder"))
    os.symlink(os.path.join(root, "gone"), os.path.join(root, "p3", "broken-link"))
    os.mkfifo(os.path.join(root, "p1", "s2", "pipe"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(root, "p1", "sock"))


def _key(metadata):
    return metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds


def test_split_walk_lists_what_one_walk_lists(tmp_path):
    _tree(str(tmp_path))
    for pattern in ("**", "*.dcm", "p1/**", "**/*.dcm", "p2/*", "a.dcm", "nothing*"):
        full = str(tmp_path / pattern)
        whole = sorted(map(_key, match_local(full)))
        assert bool(whole) == (pattern != "nothing*"), pattern
        for folders in (1, 2, 3, 5, 100):
            found, subfolders = plan_local(full, folders)
            if pattern in ("**", "*.dcm", "**/*.dcm") and 1 < folders < 100:
                assert len(subfolders) >= min(folders, 5), (pattern, folders)  # it did split
            split = list(found)
            for folder in subfolders:
                split += walk_folder(full, folder)
            assert sorted(map(_key, split)) == whole, (pattern, folders)
    # Special entries are listed (and skipped later with a reason), as by one walk.
    names = {os.path.basename(m.path) for m in match_local(str(tmp_path / "**"))}
    assert {"link-to-folder", "broken-link", "pipe", "sock"} <= names


def test_match_all_spreads_folders_and_escapes_paths(tmp_path):
    _tree(str(tmp_path))
    pattern = str(tmp_path / "**")
    expected = sorted(escape(m.path) for m in match_local(pattern))
    for folders in (1, 4):
        with beam.Pipeline("DirectRunner") as pipeline:
            paths = (pipeline | beam.Create([escape(pattern)]) | MatchAll(folders)
                     | beam.Map(lambda metadata: metadata.path))
            assert_that(paths, equal_to(expected))


def test_deduplicate_keeps_each_path_once_across_batches():
    from apache_beam.io.filesystem import FileMetadata

    from transforms.inputs.discover import DEDUPE_KEYS, Deduplicate

    paths = [f"/in/p{i % 7}/f{i}" for i in range(3 * DEDUPE_KEYS + 5)]
    files = [FileMetadata(path, len(path), 1.0) for path in paths]
    twice = files + files[::3] + files[:500]  # full and partial batches of 2
    with beam.Pipeline("DirectRunner") as pipeline:
        distinct = (pipeline | beam.Create(twice, reshuffle=False) | Deduplicate(size=2)
                    | beam.Map(lambda metadata: metadata.path))
        assert_that(distinct, equal_to(paths))
