"""Bytes read per archive, locally and from buckets, and how archive work spreads.

``python -m benchmarks.archive_bytes [-n 100] [--spread-members 2000]``

Generates ``n`` realistic files (512x512 16-bit CT/MR, ``benchmarks.make_archive``) and
packs them as a stored zip, a deflated zip, a tar and a tar.gz.

* Local: the archive steps (listing, then every member) run in this process on each
  archive, opened through a byte-counting file: every byte they read from the archive,
  against the archive's size and the members' headers (bytes before Pixel Data).
* Buckets: each zip (and the tars) is uploaded to a GCS emulator and to moto's S3 on
  127.0.0.1 and the CLI runs end to end on it through a byte-counting proxy (listing,
  ranged reads, HTTP headers: everything the server sends).
* ``--spread-members N``: a zip and a tar.gz of N small files, each read by the archive
  steps on two worker processes: how many members each process extracted. A zip's
  members are reshuffled over the workers; a tar stream is one worker's work.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
import zipfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
import storage_servers as servers  # noqa: E402  (the tests' server helpers)

import transforms.reading.archives as archives  # noqa: E402
from beam_pipeline.cli import main as cli  # noqa: E402
from benchmarks.make_archive import generate  # noqa: E402
from benchmarks.run_benchmark import _CountingFile  # noqa: E402  (counts bytes read)
from transforms.inputs.archive_members import ArchiveFound  # noqa: E402
from transforms.reading.flatten import FlattenSettings  # noqa: E402

BUCKET = "bench-archives"
PACKINGS = {
    "stored.zip": ("zip", zipfile.ZIP_STORED),
    "deflated.zip": ("zip", zipfile.ZIP_DEFLATED),
    "plain.tar": ("tar", "w"),
    "gzip.tar.gz": ("gzip", "w:gz"),
}


def pack(root: str, target: str, mode) -> None:
    names = sorted(os.path.relpath(os.path.join(folder, name), root)
                   for folder, _, files in os.walk(root) for name in files)
    if target.endswith(".zip"):
        with zipfile.ZipFile(target, "w", mode) as archive:
            for name in names:
                archive.write(os.path.join(root, name), name)
    else:
        with tarfile.open(target, mode) as archive:
            for name in names:
                archive.add(os.path.join(root, name), name)


def header_sizes(root: str) -> tuple[int, float]:
    headers = []
    for folder, _, names in os.walk(root):
        for name in names:
            data = open(os.path.join(folder, name), "rb").read()
            headers.append(data.rfind(b"\xe0\x7f\x10\x00"))
    return len(headers), sum(headers) / len(headers)


def local_bytes(path: str, kind: str) -> tuple[int, int]:
    """(bytes the archive steps read from ``path``, rows) with this process's code."""
    original = archives.open_archive
    archives.open_archive = lambda name, size: io.BufferedReader(_CountingFile(name, "rb"))
    try:
        found = ArchiveFound(path, os.path.getsize(path), os.path.getmtime(path), kind)
        lister = archives.ReadArchive(FlattenSettings())
        lister.setup()
        extractor = archives.ExtractZipMembers(FlattenSettings())
        extractor.setup()
        _CountingFile.read_total = 0
        rows = 0
        for output in lister.process(found):
            if getattr(output, "tag", None) == archives.ZIP_MEMBERS:
                outcomes = list(extractor.process(output.value))
            else:
                outcomes = [output]
            rows += sum(1 for outcome in outcomes if hasattr(outcome, "values"))
        extractor.teardown()
        return _CountingFile.read_total, rows
    finally:
        archives.open_archive = original


def upload(path: str, target: str, options: PipelineOptions) -> None:
    FileSystems.set_options(options)
    with open(path, "rb") as source, FileSystems.create(
        target, compression_type=CompressionTypes.UNCOMPRESSED
    ) as out:
        out.write(source.read())


def run(inputs: str, output: str, extra=()) -> float:
    started = time.monotonic()
    code = cli([inputs, "-o", output, "--quiet", *extra])
    if code != 0:
        raise SystemExit(f"CLI failed on {inputs}")
    return time.monotonic() - started


def bucket_bytes(work: str, paths: dict) -> None:
    print(f"\n{'store':6} {'archive':14} {'size':>12} {'bytes sent':>12} {'of the size':>12}"
          f" {'per member':>11}")
    with servers.loopback_only():
        gcs = servers.start_gcs_emulator(bucket=BUCKET)
        s3 = servers.start_moto_server(bucket=BUCKET)
        try:
            os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
            for scheme, server in (("gs", gcs), ("s3", s3)):
                for name, (path, members) in paths.items():
                    target = f"{scheme}://{BUCKET}/{name}"
                    upload(path, target, PipelineOptions(servers.s3_pipeline_args(s3.endpoint)))
                    with servers.CountingProxy(server.port) as proxy:
                        extra = ["--direct_running_mode=in_memory"]
                        if scheme == "gs":
                            os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
                        else:
                            extra += servers.s3_pipeline_args(proxy.endpoint)
                        proxy.reset()
                        run(target, os.path.join(work, f"{scheme}-{name}.csv"), extra)
                        time.sleep(0.3)
                        sent = proxy.down
                    os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
                    size = os.path.getsize(path)
                    print(f"{scheme:6} {name:14} {size:>12,} {sent:>12,} {sent / size:>12.1%}"
                          f" {sent / members:>11,.0f}")
        finally:
            gcs.stop()
            s3.stop()


def _pids(outputs):
    """Each row's outcome becomes this process's pid; member references pass on."""
    for output in outputs:
        if getattr(output, "tag", None) == archives.ZIP_MEMBERS:
            yield output
        elif hasattr(output, "values"):  # a Row
            yield os.getpid()


class _ListWithPids(archives.ReadArchive):
    def process(self, found):
        yield from _pids(super().process(found))


class _ExtractWithPids(archives.ExtractZipMembers):
    def process(self, ref):
        yield from _pids(super().process(ref))


def workers_used(path: str, kind: str, out_prefix: str) -> tuple[dict, float]:
    """({worker pid: members extracted there}, seconds): the steps of ``ReadArchives``
    (list, reshuffle, extract), each row replaced by the pid of the process that read it,
    on two worker processes."""
    import glob

    import apache_beam as beam

    found = ArchiveFound(path, os.path.getsize(path), os.path.getmtime(path), kind)
    options = PipelineOptions(["--direct_running_mode=multi_processing",
                               "--direct_num_workers=2"])
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        listed = (pipeline | beam.Create([found])
                  | "List" >> beam.ParDo(_ListWithPids(FlattenSettings()))
                  .with_outputs(archives.ZIP_MEMBERS, main="pids"))
        extracted = (listed[archives.ZIP_MEMBERS] | beam.Reshuffle()
                     | "Extract" >> beam.ParDo(_ExtractWithPids(FlattenSettings())))
        ((listed.pids, extracted) | beam.Flatten()
         | beam.combiners.Count.PerElement()
         | beam.MapTuple(lambda pid, count: f"{pid} {count}")
         | beam.io.WriteToText(out_prefix))
    seconds = time.monotonic() - started
    counts = {}
    for part in glob.glob(out_prefix + "*"):
        for line in open(part, encoding="utf-8"):
            pid, count = line.split()
            counts[int(pid)] = int(count)
    return counts, seconds


def spread(work: str, members: int) -> None:
    """Which worker processes extract the members of one archive (a count per process
    does not depend on the machine's load; the seconds do)."""
    root = os.path.join(work, "spread")
    generate(root, members, small=True)
    print(f"\nspread: one archive of {members} small files (64x64), two worker processes"
          f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'archive':14} {'members extracted per worker process':>40} {'seconds':>8}")
    for name, mode, kind in (("spread.zip", zipfile.ZIP_DEFLATED, "zip"),
                             ("spread.tar.gz", "w:gz", "gzip")):
        path = os.path.join(work, name)
        pack(root, path, mode)
        counts, seconds = workers_used(path, kind, os.path.join(work, name + "-pids"))
        shares = " + ".join(f"{count:,}" for count in sorted(counts.values(), reverse=True))
        print(f"{name:14} {shares:>40} {seconds:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--spread-members", type=int, default=0)
    parser.add_argument("--no-buckets", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="archive-bytes-")
    root = os.path.join(work, "files")
    generate(root, args.n)
    files, header = header_sizes(root)
    member_size = sum(os.path.getsize(os.path.join(folder, name))
                      for folder, _, names in os.walk(root) for name in names) / files
    print(f"{files} members: {member_size:,.0f} B on average, header {header:,.0f} B")
    print(f"{'local':6} {'archive':14} {'size':>12} {'bytes read':>12} {'of the size':>12}"
          f" {'per member':>11} {'rows':>5}")
    paths = {}
    for name, (kind, mode) in PACKINGS.items():
        path = os.path.join(work, name)
        pack(root, path, mode)
        read, rows = local_bytes(path, kind)
        size = os.path.getsize(path)
        print(f"{'local':6} {name:14} {size:>12,} {read:>12,} {read / size:>12.1%}"
              f" {read / files:>11,.0f} {rows:>5}")
        paths[name] = (path, files)
    if not args.no_buckets:
        bucket_bytes(work, paths)
    if args.spread_members:
        spread(work, args.spread_members)


if __name__ == "__main__":
    main()
