"""Buckets: ``gs://`` and ``s3://`` inputs and outputs next to local paths.

Everything goes through Beam's ``FileSystems`` (install the ``gcp`` / ``aws`` extras),
except where Beam's defaults would cost too much: header-only reads
(``transforms/inputs/ranged.py``) and these clients.

* Credentials. With ``--anonymous-access``, or when ``STORAGE_EMULATOR_HOST`` names a
  GCS emulator, this module's clients are anonymous (``Client.create_anonymous_client``)
  and S3 requests unsigned (``botocore.UNSIGNED``), without any lookup; otherwise ADC
  for GCS and the usual AWS chain (or the ``--s3_*`` options) for S3. Beam's own clients
  (``FileSystems``) get the same through ``transforms/common/beam_internals.py``, the one
  adapter that touches Beam internals.
* Checks before any work: ``transforms/inputs/checks.py``.
* Retries (README, "What happens when things fail"), from the client libraries' own
  settings: S3 through botocore's ``legacy`` retry mode, ``S3_MAX_ATTEMPTS`` retries
  (HTTP 429, 500, 502, 503, 504, 509, connection errors and timeouts; a random base
  under 1 s doubling per retry), connect and read timeouts ``S3_TIMEOUTS``. Not the
  ``standard`` mode: it knows throttling only by an error code in the body, and a
  ``HEAD`` answer has none, so a bare 429 there failed Beam's ``exists()`` and the run.
  Beam's own S3 client gets the same mode and count through botocore's
  ``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS`` (set by ``prepare_filesystems`` unless the
  user set them). GCS through google-cloud-storage's ``DEFAULT_RETRY`` (429, 500, 502,
  503, 504, connection resets, truncated bodies; 1 s doubling to 60 s,
  ``GCS_RETRY_SECONDS`` in all) with ``GCS_TIMEOUTS``; Beam's gcsio uses the same
  library's retries. A read still failing after them is the file's error row.
"""

from __future__ import annotations

import os
import threading

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.common import beam_internals

BUCKET_SCHEMES = ("gs", "s3")
S3_MAX_ATTEMPTS = 8
S3_RETRY_MODE = "legacy"  # retries a bare 429 too (standard does not): see above
S3_TIMEOUTS = (10, 60)  # connect, read (seconds)
GCS_RETRY_SECONDS = 120.0
GCS_TIMEOUTS = (10, 60)


class StorageOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--anonymous-access", "--anonymous_access",
            dest="anonymous_access", action="store_true", default=False,
            help="Read and write gs:// and s3:// without credentials (public buckets, "
            "emulators): no credential lookup. Implied for GCS when "
            "STORAGE_EMULATOR_HOST is set.",
        )


class StorageError(Exception):
    """A bucket input or output that cannot be used; the message is one line."""


def scheme(path: str) -> str | None:
    return path.split("://", 1)[0].lower() if "://" in path else None


def is_bucket(path: str) -> bool:
    return scheme(path) in BUCKET_SCHEMES


def split_bucket(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    rest = path.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def pipeline_options(options=None) -> PipelineOptions:
    """``options``, else what ``FileSystems.set_options`` / the worker got."""
    if options is None:
        options = beam_internals.filesystems_options()
    return options if options is not None else PipelineOptions([])


def prepare_filesystems(options=None) -> None:
    """Make Beam's own bucket clients in this process anonymous where access is
    (``transforms.common.beam_internals``). Idempotent; every step that touches
    ``FileSystems`` calls it in ``setup``."""
    options = pipeline_options(options)
    # botocore reads these for every client it makes, Beam's included (a user's own
    # setting wins).
    os.environ.setdefault("AWS_RETRY_MODE", S3_RETRY_MODE)
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(S3_MAX_ATTEMPTS))
    beam_internals.prepare_filesystems(
        [path_scheme for path_scheme in BUCKET_SCHEMES if anonymous(options, path_scheme)],
        _unsigned_s3_client_if_anonymous,
    )


def read_small_file(path: str) -> bytes:
    """The bytes of a small file (a key, a password), on this machine or in a bucket;
    ``OSError`` when it cannot be read, a bucket's refusal in one line."""
    if not is_bucket(path):
        with open(path, "rb") as stream:
            return stream.read()
    from apache_beam.io.filesystems import FileSystems

    prepare_filesystems()
    try:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            return stream.read()
    except Exception as exc:  # pylint: disable=broad-except  # each client has its own
        raise OSError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


def workers_see_only_buckets(options) -> bool:
    """Dataflow: the workers run on other machines, which see buckets but neither this
    machine's files nor its environment variables."""
    from apache_beam.options.pipeline_options import StandardOptions

    view = getattr(options, "view_as", None)  # settings built from a plain namespace too
    runner = view(StandardOptions).runner if view else getattr(options, "runner", None)
    return "dataflow" in str(runner or "").lower()


def _unsigned_s3_client_if_anonymous(options):
    return unsigned_s3_client(options) if anonymous(options, "s3") else None


def anonymous(options=None, path_scheme: str = "gs") -> bool:
    """Whether bucket calls go without credentials for ``path_scheme``."""
    options = pipeline_options(options)
    if options.view_as(StorageOptions).anonymous_access:
        return True
    return path_scheme == "gs" and bool(os.environ.get("STORAGE_EMULATOR_HOST"))


# --------------------------------------------------------------------------------------
# Clients, through public APIs only
# --------------------------------------------------------------------------------------

def unsigned_s3_client(options):
    """A boto3 S3 client that signs nothing (public buckets): no credential lookup."""
    import boto3
    from botocore import UNSIGNED
    from apache_beam.options.pipeline_options import S3Options

    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        "s3",
        region_name=s3.s3_region_name,
        endpoint_url=s3.s3_endpoint_url,
        use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify,
        config=s3_config(signature_version=UNSIGNED),
    )


def s3_config(**settings):
    """botocore's retry and timeout settings of every S3 client this tool makes."""
    from botocore.config import Config

    return Config(retries={"mode": S3_RETRY_MODE, "max_attempts": S3_MAX_ATTEMPTS},
                  connect_timeout=S3_TIMEOUTS[0], read_timeout=S3_TIMEOUTS[1], **settings)


def gcs_retry():
    """google-cloud-storage's own retry policy, bounded to ``GCS_RETRY_SECONDS``."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(GCS_RETRY_SECONDS)


def s3_client(options):
    """boto3 S3 client from the ``--s3_*`` options (unsigned when anonymous)."""
    import boto3
    from apache_beam.options.pipeline_options import S3Options

    if anonymous(options, "s3"):
        return unsigned_s3_client(options)
    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        "s3",
        config=s3_config(),
        region_name=s3.s3_region_name,
        api_version=s3.s3_api_version,
        endpoint_url=s3.s3_endpoint_url,
        use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify,
        aws_access_key_id=s3.s3_access_key_id,
        aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token,
    )


def gcs_client(options):
    """google-cloud-storage client: anonymous (emulator, public bucket) or ADC."""
    from google.cloud import storage as gcs
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    if anonymous(options, "gs"):
        return gcs.Client.create_anonymous_client()  # honours STORAGE_EMULATOR_HOST
    return gcs.Client(project=options.view_as(GoogleCloudOptions).project)


_clients: dict = {}
_clients_lock = threading.Lock()


def client(path_scheme: str, options):
    """One client per process and configuration (Beam builds one per call)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, S3Options

    if path_scheme == "gs":
        key = ("gs", anonymous(options, "gs"), os.environ.get("STORAGE_EMULATOR_HOST"),
               options.view_as(GoogleCloudOptions).project)
    else:
        s3 = options.view_as(S3Options)
        key = ("s3", anonymous(options, "s3"), s3.s3_endpoint_url, s3.s3_region_name,
               s3.s3_access_key_id, s3.s3_secret_access_key, s3.s3_session_token)
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            cached = gcs_client(options) if path_scheme == "gs" else s3_client(options)
            _clients[key] = cached
        return cached


class PrepareStorage(beam.DoFn):
    """Pass-through whose ``setup`` prepares Beam's bucket clients in the worker that
    lists the inputs (Beam's own match step imports nothing of this project)."""

    def setup(self):
        prepare_filesystems()

    def process(self, element):
        yield element
