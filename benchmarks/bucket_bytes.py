"""Bytes on the wire per object when the archive is in a bucket.

``python -m benchmarks.bucket_bytes [-n 200]``

Generates ``n`` realistic files (512x512 16-bit CT/MR, ``benchmarks.make_archive``),
uploads them to a GCS emulator and to moto's S3 server on 127.0.0.1, and runs the CLI
end to end on each bucket through a byte-counting proxy: everything the servers send
(listing, header reads, HTTP headers) divided by the files, next to the average object
size and the average header size (bytes before Pixel Data). The local run of the same
archive is the baseline for the CSV, which must be identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
import storage_servers as servers  # noqa: E402  (the tests' server helpers)

from beam_pipeline.cli import main as cli  # noqa: E402
from benchmarks.make_archive import generate  # noqa: E402

BUCKET = "bench"


def upload(root: str, prefix: str, options: PipelineOptions) -> None:
    FileSystems.set_options(options)
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as source, FileSystems.create(
                prefix + os.path.relpath(path, root)
            ) as out:
                out.write(source.read())


def header_sizes(root: str) -> tuple[int, float, float]:
    sizes, headers = [], []
    for folder, _, names in os.walk(root):
        for name in names:
            data = open(os.path.join(folder, name), "rb").read()
            sizes.append(len(data))
            headers.append(data.rfind(b"\xe0\x7f\x10\x00"))
    return len(sizes), sum(sizes) / len(sizes), sum(headers) / len(headers)


def run(inputs: str, output: str, extra=()) -> None:
    code = cli([inputs, "-o", output, "--quiet", "--direct_running_mode=in_memory", *extra])
    if code != 0:
        raise SystemExit(f"CLI failed on {inputs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bucket-bytes-")
    root = os.path.join(work, "archive")
    generate(root, args.n)
    files, object_size, header_size = header_sizes(root)
    run(root, os.path.join(work, "local.csv"))
    local = open(os.path.join(work, "local.csv"), "rb").read().replace(root.encode() + b"/", b"")
    print(f"{files} files: object {object_size:,.0f} B on average, header {header_size:,.0f} B")
    print(f"{'store':6} {'bytes sent/file':>16} {'of the object':>14} {'past the header':>16}")
    with servers.loopback_only():
        gcs = servers.start_gcs_emulator(bucket=BUCKET)
        s3 = servers.start_moto_server(bucket=BUCKET)
        try:
            os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
            for scheme, server in (("gs", gcs), ("s3", s3)):
                prefix = f"{scheme}://{BUCKET}/archive/"
                upload(root, prefix, PipelineOptions(servers.s3_pipeline_args(s3.endpoint)))
                with servers.CountingProxy(server.port) as proxy:
                    extra = []
                    if scheme == "gs":
                        os.environ["STORAGE_EMULATOR_HOST"] = proxy.endpoint
                    else:
                        extra = servers.s3_pipeline_args(proxy.endpoint)
                    output = os.path.join(work, f"{scheme}.csv")
                    proxy.reset()
                    run(prefix, output, extra)
                    sent = proxy.down
                os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
                table = open(output, "rb").read().replace(prefix.encode(), b"")
                same = "CSV identical to local" if table == local else "CSV DIFFERS"
                per_file = sent / files
                print(f"{scheme:6} {per_file:>16,.0f} {per_file / object_size:>13.1%} "
                      f"{per_file - header_size:>16,.0f}   {same}")
        finally:
            gcs.stop()
            s3.stop()


if __name__ == "__main__":
    main()
