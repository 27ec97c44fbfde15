"""Header-only reads of bucket objects: bounded ``Range`` requests, on demand.

``FileSystems.open`` on a bucket buffers 16 MiB, i.e. downloads a whole CT slice to read
its 2 KB header. Here (:func:`open_ranged`) every object is read with bounded ``Range``
requests: the first one fetches ``FIRST_BLOCK`` bytes, and only a header that is longer
than that (or a text value past it) makes another request, each twice as large as the
one before up to ``MAX_BLOCK``. The same reader streams the row shards during the final
merge, so the merge holds at most ``MAX_BLOCK`` per shard in memory, not the table.

Errors: a missing object or a refused read raise ``FileNotFoundError`` /
``PermissionError`` for both clouds (Beam raises Google's own exception types for GCS),
and any other refusal, such as one still there once the client's retries are spent
(throttling, 5xx, resets, bodies cut short), raises ``OSError(EIO)`` saying so: each
file lands in ``errors.csv`` as ``Unreadable`` with a readable reason, not as a header
that failed to parse.
"""

from __future__ import annotations

import errno
import time

from apache_beam.io.filesystems import FileSystems

from transforms.common.streams import ReadOnlyStream
from transforms.inputs.storage import (
    GCS_TIMEOUTS, S3_MAX_ATTEMPTS, client, gcs_retry, pipeline_options, scheme, split_bucket,
)

# First request per object: a DICOM header is usually a few KB; 16 KB holds most
# headers whole while costing far less than the 64 KB pixel block behind them.
FIRST_BLOCK = 16 * 1024
MAX_BLOCK = 1 << 20


def _gcs_fetcher(path: str, options):
    from google.api_core import exceptions as google_errors

    bucket, name = split_bucket(path)
    blob = client("gs", options).bucket(bucket).blob(name)

    def fetch(start: int, end: int) -> bytes:
        try:
            return blob.download_as_bytes(start=start, end=end - 1, raw_download=True,
                                          checksum=None, retry=gcs_retry(),
                                          timeout=GCS_TIMEOUTS)
        except google_errors.RequestRangeNotSatisfiable:
            return b""  # at or past the end
        except google_errors.NotFound as exc:
            raise FileNotFoundError(errno.ENOENT, f"no such object: {path}") from exc
        except google_errors.Forbidden as exc:
            raise PermissionError(errno.EACCES, f"permission denied: {path}") from exc
        except (google_errors.GoogleAPICallError, google_errors.RetryError) as exc:
            raise refused_read(path, exc) from exc
        except OSError as exc:
            # requests' errors (resets, bodies cut short) are OSErrors without an errno
            if exc.errno is not None:
                raise
            raise refused_read(path, exc) from exc

    return fetch


def refused_read(path: str, exc: BaseException, status: int | None = None) -> OSError:
    """A read the storage service refused, after the client's retries where the answer
    was one to retry (the client's message says how many it made)."""
    reason = " ".join(str(exc).split())[:300]
    answer = f"HTTP {status}, " if status else ""
    return OSError(errno.EIO, f"the storage service refused the read: {answer}"
                   f"{type(exc).__name__}: {reason}", path)


def _s3_fetcher(path: str, options):
    from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    bucket, key = split_bucket(path)
    s3 = client("s3", options)

    def fetch(start: int, end: int) -> bytes:
        try:
            response = s3.get_object(Bucket=bucket, Key=key,
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
            raise refused_read(path, exc, status) from exc
        with response["Body"] as body:
            return body.read()

    def fetch_retrying_body(start: int, end: int) -> bytes:
        # botocore retries the request, not the body read after it: a body cut short
        # (IncompleteReadError, ResponseStreamingError, urllib3's ProtocolError) is
        # fetched again, as often.
        for attempt in range(S3_MAX_ATTEMPTS):
            try:
                return fetch(start, end)
            except (IncompleteReadError, ResponseStreamingError, ProtocolError) as exc:
                if attempt == S3_MAX_ATTEMPTS - 1:
                    raise refused_read(path, exc) from exc
                time.sleep(min(20.0, 0.1 * 2 ** attempt))
        raise AssertionError("unreachable")

    return fetch_retrying_body

    return fetch


class RangedReader(ReadOnlyStream):
    """A seekable read-only object whose bytes are fetched in bounded ranges, on demand.

    One block is kept. A read outside it fetches a new block starting at the read
    position; reads that continue where the last block ended double the block size (up
    to ``max_block``), a jump elsewhere starts again at ``first_block``. ``fetched`` and
    ``requests`` count what went over the wire.
    """

    def __init__(self, fetch, name: str, first_block: int = FIRST_BLOCK,
                 max_block: int = MAX_BLOCK, size: int | None = None):
        super().__init__(name)
        self._fetch = fetch
        self.first_block = first_block
        self.max_block = max(max_block, first_block)
        self._next_block = first_block
        self._block = b""
        self._block_start = 0
        self._size = size  # if not given, learnt when a fetch comes back short
        self.fetched = 0
        self.requests = 0

    def stream_size(self) -> int:
        while self._size is None:  # read to the end in growing blocks (rarely needed)
            self._load(max(self.position, self._block_start + len(self._block)))
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
            if self._size is not None and self.position >= self._size:
                break
            offset = self.position - self._block_start
            if not 0 <= offset < len(self._block):
                self._load(self.position)
                offset = 0
                if not self._block:
                    break
            count = min(len(view) - done, len(self._block) - offset)
            view[done:done + count] = self._block[offset:offset + count]
            done += count
            self.position += count
        return done


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
