"""Buckets: ``gs://`` and ``s3://`` inputs and outputs next to local paths.

Everything goes through Beam's ``FileSystems`` (install the ``gcp`` / ``aws`` extras),
except where Beam's defaults would cost too much:

* Header-only reads (:func:`open_ranged`). ``FileSystems.open`` on a bucket buffers
  16 MiB, i.e. downloads a whole CT slice to read its 2 KB header. Here every object is
  read with bounded ``Range`` requests: the first one fetches ``FIRST_BLOCK`` bytes,
  and only a header that is longer than that (or a text value past it) makes another
  request, each twice as large as the one before up to ``MAX_BLOCK``. The same reader
  streams the CSV shards during the final merge, so the merge holds at most
  ``MAX_BLOCK`` per shard in memory, not the table.
* Credentials. With ``--anonymous-access``, or when ``STORAGE_EMULATOR_HOST`` names a
  GCS emulator, this module's clients are anonymous (``Client.create_anonymous_client``)
  and S3 requests unsigned (``botocore.UNSIGNED``), without any lookup; otherwise ADC
  for GCS and the usual AWS chain (or the ``--s3_*`` options) for S3. Beam's own clients
  (``FileSystems``) get the same through ``transforms/beam_internals.py``, the one
  adapter that touches Beam internals.
* Errors. A missing object or a refused read raise ``FileNotFoundError`` /
  ``PermissionError`` for both clouds (Beam raises Google's own exception types for GCS),
  so a vanished file lands in ``errors.csv`` with a readable reason.
* Checks before any work (:func:`check_input`, :func:`check_output`): a missing bucket,
  a refused listing or an output bucket that cannot be written is one clear line.
"""

from __future__ import annotations

import errno
import io
import os
import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

BUCKET_SCHEMES = ("gs", "s3")
# First request per object: a DICOM header is usually a few KB; 16 KB holds most
# headers whole while costing far less than the 64 KB pixel block behind them.
FIRST_BLOCK = 16 * 1024
MAX_BLOCK = 1 << 20


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
        from transforms import beam_internals

        options = beam_internals.filesystems_options()
    return options if options is not None else PipelineOptions([])


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
    from botocore.config import Config
    from apache_beam.options.pipeline_options import S3Options

    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        "s3",
        region_name=s3.s3_region_name,
        endpoint_url=s3.s3_endpoint_url,
        use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify,
        config=Config(signature_version=UNSIGNED),
    )


def s3_client(options):
    """boto3 S3 client from the ``--s3_*`` options (unsigned when anonymous)."""
    import boto3
    from apache_beam.options.pipeline_options import S3Options

    if anonymous(options, "s3"):
        return unsigned_s3_client(options)
    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        "s3",
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


# --------------------------------------------------------------------------------------
# Ranged reads
# --------------------------------------------------------------------------------------

_clients: dict = {}
_clients_lock = threading.Lock()


def _client(path_scheme: str, options):
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
        client = _clients.get(key)
        if client is None:
            client = gcs_client(options) if path_scheme == "gs" else s3_client(options)
            _clients[key] = client
        return client


def _gcs_fetcher(path: str, options):
    from google.api_core import exceptions as google_errors

    bucket, name = split_bucket(path)
    blob = _client("gs", options).bucket(bucket).blob(name)

    def fetch(start: int, end: int) -> bytes:
        try:
            return blob.download_as_bytes(start=start, end=end - 1, raw_download=True,
                                          checksum=None)
        except google_errors.RequestRangeNotSatisfiable:
            return b""  # at or past the end
        except google_errors.NotFound as exc:
            raise FileNotFoundError(errno.ENOENT, f"no such object: {path}") from exc
        except google_errors.Forbidden as exc:
            raise PermissionError(errno.EACCES, f"permission denied: {path}") from exc

    return fetch


def _s3_fetcher(path: str, options):
    from botocore.exceptions import ClientError

    bucket, key = split_bucket(path)
    client = _client("s3", options)

    def fetch(start: int, end: int) -> bytes:
        try:
            response = client.get_object(Bucket=bucket, Key=key,
                                         Range=f"bytes={start}-{end - 1}")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 416 or code == "InvalidRange":
                return b""
            if code == "NoSuchBucket":
                raise FileNotFoundError(errno.ENOENT, f"no such bucket: {path}") from exc
            if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(errno.ENOENT, f"no such object: {path}") from exc
            if status == 403 or code in ("AccessDenied", "403", "Forbidden"):
                raise PermissionError(errno.EACCES, f"permission denied: {path}") from exc
            raise
        with response["Body"] as body:
            return body.read()

    return fetch


def seek_position(offset: int, whence: int, position: int, size) -> int:
    """Where ``seek(offset, whence)`` goes from ``position``; ``size()``: the stream's
    size, asked only for ``SEEK_END`` (it may raise ``io.UnsupportedOperation``)."""
    if whence == io.SEEK_SET:
        target = offset
    elif whence == io.SEEK_CUR:
        target = position + offset
    elif whence == io.SEEK_END:
        target = size() + offset
    else:
        raise ValueError(f"invalid whence {whence!r}")
    if target < 0:
        raise ValueError(f"negative seek position {target}")
    return target


class RangedReader(io.RawIOBase):
    """A seekable read-only object whose bytes are fetched in bounded ranges, on demand.

    One block is kept. A read outside it fetches a new block starting at the read
    position; reads that continue where the last block ended double the block size (up
    to ``max_block``), a jump elsewhere starts again at ``first_block``. ``fetched`` and
    ``requests`` count what went over the wire.
    """

    def __init__(self, fetch, name: str, first_block: int = FIRST_BLOCK,
                 max_block: int = MAX_BLOCK, size: int | None = None):
        super().__init__()
        self._fetch = fetch
        self.name = name
        self.first_block = first_block
        self.max_block = max(max_block, first_block)
        self._next_block = first_block
        self._block = b""
        self._block_start = 0
        self._pos = 0
        self._size = size  # if not given, learnt when a fetch comes back short
        self.fetched = 0
        self.requests = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        self._pos = seek_position(offset, whence, self._pos, self._object_size)
        return self._pos

    def _object_size(self) -> int:
        while self._size is None:  # read to the end in growing blocks (rarely needed)
            self._load(max(self._pos, self._block_start + len(self._block)))
        return self._size

    def _load(self, position: int) -> None:
        if self._block and position == self._block_start + len(self._block):
            self._next_block = min(2 * self._next_block, self.max_block)
        else:
            self._next_block = self.first_block
        size = self._next_block
        data = self._fetch(position, position + size)
        self.requests += 1
        self.fetched += len(data)
        if len(data) < size:
            self._size = position + len(data)
        self._block, self._block_start = data, position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            if self._size is not None and self._pos >= self._size:
                break
            offset = self._pos - self._block_start
            if not 0 <= offset < len(self._block):
                self._load(self._pos)
                offset = 0
                if not self._block:
                    break
            count = min(len(view) - done, len(self._block) - offset)
            view[done:done + count] = self._block[offset:offset + count]
            done += count
            self._pos += count
        return done

    def readall(self) -> bytes:
        chunks = []
        while True:
            chunk = self.read(self.max_block)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def open_ranged(path: str, options=None, first_block: int = FIRST_BLOCK,
                max_block: int = MAX_BLOCK, size: int | None = None):
    """A seekable binary stream over ``path``: local file, or ranged reads of an object.

    ``size``, when known, saves reading to the end to find it (seeking from the end, as
    a Parquet reader does for its footer).

    Nothing is requested until the first read. A missing object raises
    ``FileNotFoundError`` and a refused one ``PermissionError`` (at the first read).
    """
    path_scheme = scheme(path)
    if path_scheme is None:
        return open(path, "rb")
    if path_scheme == "file":
        return open(path[len("file://"):], "rb")
    options = pipeline_options(options)
    if path_scheme == "gs":
        return RangedReader(_gcs_fetcher(path, options), path, first_block, max_block, size)
    if path_scheme == "s3":
        return RangedReader(_s3_fetcher(path, options), path, first_block, max_block, size)
    from apache_beam.io.filesystem import CompressionTypes

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


# --------------------------------------------------------------------------------------
# Checks before any work
# --------------------------------------------------------------------------------------

def _cause(exc: BaseException) -> BaseException:
    """The per-path exception inside a BeamIOError, else ``exc``."""
    details = getattr(exc, "exception_details", None)
    if isinstance(details, dict) and details:
        inner = next(iter(details.values()))
        if isinstance(inner, BaseException):
            return _cause(inner)
    return exc


def _describe(exc: BaseException, path: str, doing: str) -> str:
    cause = _cause(exc)
    status = getattr(cause, "code", None)
    if not isinstance(status, int):  # google-resumable-media keeps the HTTP response
        status = getattr(getattr(cause, "response", None), "status_code", None)
    name = type(cause).__name__
    text = " ".join(str(cause).split())
    bucket = split_bucket(path)[0]
    if status == 404 or name in ("NotFound", "FileNotFoundError") or "NoSuchBucket" in text:
        return f"bucket {scheme(path)}://{bucket} does not exist (or is not visible)"
    if status == 403 or name in ("Forbidden", "PermissionError") or "AccessDenied" in text:
        return f"no permission to {doing} {path}"
    if len(text) > 200:
        text = text[:200] + "..."
    return f"cannot {doing} {path}: {name}: {text}"


def _s3_bucket_problem(path: str, options) -> str | None:
    """Beam's S3 listing treats a missing bucket as empty; ask the bucket itself."""
    from botocore.exceptions import ClientError

    bucket = split_bucket(path)[0]
    try:
        _client("s3", options).head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            return f"bucket s3://{bucket} does not exist"
        if status == 403:
            return f"no permission to read bucket s3://{bucket}"
        return f"cannot read bucket s3://{bucket}: {' '.join(str(exc).split())}"
    return None


def check_input(path: str, options=None) -> str:
    """Return the input to match for a bucket path, or raise :class:`StorageError`.

    One listing with a limit of 1: a missing bucket or a refused listing is an error,
    and so is a path that matches nothing. ``gs://b/folder`` (no slash) that is not an
    object but has objects under it becomes ``gs://b/folder/``.
    """
    from transforms.discover import has_glob, to_pattern

    options = pipeline_options(options)
    from transforms import beam_internals

    beam_internals.prepare_filesystems(options)
    bucket, key = split_bucket(path)
    if not bucket:
        raise StorageError(f"input {path!r} names no bucket")
    candidates = [path] if has_glob(path) or not key or key.endswith("/") else [path, path + "/"]
    for candidate in candidates:
        try:
            result = FileSystems.match([to_pattern(candidate)], limits=[1])[0]
        except Exception as exc:  # pylint: disable=broad-except
            raise StorageError(f"input {path!r}: " + _describe(exc, path, "list")) from exc
        if result.metadata_list:
            return candidate
    problem = _s3_bucket_problem(path, options) if scheme(path) == "s3" else None
    raise StorageError(f"input {path!r}: " + (problem or "matches no object"))


def check_output(path: str, options=None) -> None:
    """Raise :class:`StorageError` unless an object can be written next to ``path``.

    Writes and deletes a small probe object: the only check that proves the bucket
    exists and takes writes from these credentials.
    """
    import uuid

    options = pipeline_options(options)
    from transforms import beam_internals

    beam_internals.prepare_filesystems(options)
    bucket, key = split_bucket(path)
    if not bucket or not key or key.endswith("/"):
        raise StorageError(f"output {path!r} must name an object, such as "
                           f"{path.rstrip('/')}/scan.csv")
    directory = FileSystems.split(path)[0]
    probe = FileSystems.join(directory, f".write-check-{uuid.uuid4().hex}")
    try:
        with FileSystems.create(probe) as stream:
            stream.write(b"write check\n")  # Beam's S3 upload of 0 bytes fails
        FileSystems.delete([probe])
    except Exception as exc:  # pylint: disable=broad-except
        raise StorageError(f"output {path!r}: " + _describe(exc, path, "write")) from exc


class PrepareStorage(beam.DoFn):
    """Pass-through whose ``setup`` prepares Beam's bucket clients in the worker that
    lists the inputs (Beam's own match step imports nothing of this project)."""

    def setup(self):
        from transforms import beam_internals

        beam_internals.prepare_filesystems()

    def process(self, element):
        yield element
