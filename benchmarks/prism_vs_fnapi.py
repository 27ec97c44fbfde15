"""Prism against the local default (the in-process FnApiRunner) on a generated archive.

    PYTHONPATH=. python benchmarks/prism_vs_fnapi.py --files 2000 --repeats 3

Writes an archive of small CT-like DICOM files with pydicom (plus a few non-DICOM and
broken files), runs the command line on it with each runner in a fresh process, checks
the CSVs are identical, and prints wall-clock seconds (the whole command, as a user
waits for it) and pipeline seconds (the summary's own clock, without interpreter
start-up), medians over the repeats, and the ratio Prism / FnApiRunner.

Prism comes from ``--prism`` or ``$BEAM_PRISM_BINARY`` or the engines cache
(``bash .ci/install_engines.sh``); it is never downloaded.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PRISM = os.path.expanduser("~/.cache/dicom-meta-engines/prism-v2.77.0/prism")


def make_file(path: str, number: int, rng: random.Random) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = rng.choice(["CT", "MR", "PT"])
    ds.PatientName = f"Patient^{number % 97}"
    ds.PatientID = f"P{number % 97:05d}"
    ds.StudyDescription = rng.choice(["HEAD", "CHEST, with contrast", "ABDOMEN"])
    ds.InstanceNumber = number
    ds.SliceThickness = rng.choice(["0.625", "1.25", "5"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = [0.5, 0.5]
    if number % 10 == 0:  # some files carry extra elements: the column set varies
        ds.ContrastBolusAgent = "IODINE"
        item = Dataset()
        item.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedImageSequence = Sequence([item])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def generate(root: str, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for number in range(files):
        folder = os.path.join(root, f"patient{number % 50:03d}", f"series{number % 7}")
        os.makedirs(folder, exist_ok=True)
        make_file(os.path.join(folder, f"IM{number:07d}.dcm"), number, rng)
    with open(os.path.join(root, "README.txt"), "w") as stream:
        stream.write("not DICOM\n")
    with open(os.path.join(root, "broken.dcm"), "wb") as stream:
        stream.write(b"\0" * 128 + b"DICM" + bytes(range(100)))


def run(archive: str, out_dir: str, extra: list[str]) -> tuple[float, float]:
    """(wall seconds of the whole command, pipeline seconds from its summary)."""
    os.makedirs(out_dir, exist_ok=True)
    output = os.path.join(out_dir, "scan.csv")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", archive, "-o", output, "--quiet", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed ({' '.join(extra) or 'FnApiRunner'}):\n{proc.stderr[-4000:]}")
    with open(os.path.join(out_dir, "scan.summary.json")) as stream:
        return wall, json.load(stream)["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="DICOM files to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prism", default=os.environ.get("BEAM_PRISM_BINARY") or DEFAULT_PRISM)
    parser.add_argument("--archive", help="use this archive instead of generating one")
    args = parser.parse_args()
    if not os.access(args.prism, os.X_OK):
        sys.exit(f"no Prism binary at {args.prism}: run `bash .ci/install_engines.sh`")
    runners = {
        "FnApiRunner": [],
        "PrismRunner": ["--config", "run_configs/prism.yaml", f"--prism_location={args.prism}"],
    }
    with tempfile.TemporaryDirectory(prefix="prism-vs-fnapi-") as work:
        archive = args.archive
        if archive is None:
            archive = os.path.join(work, "archive")
            started = time.perf_counter()
            generate(archive, args.files)
            print(f"generated {args.files} DICOM files in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            for name, extra in runners.items():  # interleaved, so drift hits both alike
                times[name].append(run(archive, os.path.join(work, f"{name}-{repeat}"), extra))
        for repeat in range(args.repeats):
            if not filecmp.cmp(os.path.join(work, f"FnApiRunner-{repeat}", "scan.csv"),
                               os.path.join(work, f"PrismRunner-{repeat}", "scan.csv"), shallow=False):
                sys.exit("the two runners wrote different CSVs")
        files = args.files if args.archive is None else None
        print(f"{'runner':<12} {'wall s':>8} {'pipeline s':>11} {'files/s':>9}  (medians of {args.repeats})")
        medians = {}
        for name, samples in times.items():
            wall = statistics.median(s[0] for s in samples)
            pipeline = statistics.median(s[1] for s in samples)
            medians[name] = (wall, pipeline)
            rate = f"{files / pipeline:9.0f}" if files else f"{'-':>9}"
            print(f"{name:<12} {wall:8.2f} {pipeline:11.2f} {rate}")
        (fa_wall, fa_pipe), (pr_wall, pr_pipe) = medians["FnApiRunner"], medians["PrismRunner"]
        print(f"ratio Prism/FnApiRunner: wall {pr_wall / fa_wall:.2f}, pipeline {pr_pipe / fa_pipe:.2f} "
              "(>1 means Prism is slower); CSVs identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
