"""The readers freeze what a process holds before its first file (transforms/common/
collector.py): once per process, so that the data of work in flight stays collectable."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc
from transforms.common.collector import freeze_startup_objects
from transforms.reading.extract import ExtractHeaders  # what a worker holds at setup
assert gc.get_freeze_count() == 0
freeze_startup_objects()
frozen = gc.get_freeze_count()
in_flight = [[index] for index in range(10000)]  # tracked objects made after the first call
freeze_startup_objects()
print(frozen, gc.get_freeze_count())
"""


def test_startup_objects_are_frozen_once_per_process():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          check=True)
    frozen, after = map(int, done.stdout.split())
    assert frozen > 10000  # Beam, pydicom and the project's modules
    assert after == frozen  # the second call froze nothing of the work in flight
