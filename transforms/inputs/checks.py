"""Checks before any work: a bucket input that lists nothing, a missing bucket, a refused
listing or an output bucket that cannot be written is one clear line (``StorageError``),
raised by the launcher before the pipeline is built.
"""

from __future__ import annotations

import os
import re
import uuid

from apache_beam.io.filesystems import FileSystems

from transforms.inputs.match import has_glob, to_pattern
from transforms.inputs.storage import (
    StorageError, client, pipeline_options, prepare_filesystems, scheme, split_bucket,
)


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
        client("s3", options).head_bucket(Bucket=bucket)
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
    options = pipeline_options(options)
    prepare_filesystems(options)
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
    options = pipeline_options(options)
    prepare_filesystems(options)
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


# Schemes an input may have: buckets and file:// (Beam's filesystems), and DICOMweb
# servers (transforms/inputs/dicomweb.py).
KNOWN_SCHEMES = ("gs", "s3", "file", "dicomweb+http", "dicomweb+https")
_URL_START = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/+)")


def check_scheme(path: str) -> None:
    """``StorageError`` for an input that names a scheme nothing reads (``http://h/x``,
    ``ftp://...``) or a malformed one (``gs:/b``). A local name that exists, or a
    Windows drive (``C:/``, one letter), is no URL."""
    match = _URL_START.match(path)
    if match is None or os.path.exists(path):
        return
    name, slashes = match.group(1).lower(), match.group(2)
    if name in KNOWN_SCHEMES:
        if slashes != "//":
            raise StorageError(f"input {path!r}: malformed URL, write {name}://...")
        return
    hint = (" (a DICOMweb server: dicomweb+http://... or dicomweb+https://...)"
            if name in ("http", "https") else "")
    raise StorageError(f"input {path!r}: no input reads {name}:// URLs; inputs are "
                       f"folders, files, globs, gs://, s3://, dicomweb+http(s)://{hint}")


def check_local_output_folder(folder: str) -> None:
    """Raise ``StorageError`` unless a file can be created in ``folder``: by creating
    (and removing) one, since permission bits say nothing about a read-only mount, a
    full disk's inodes or ``/proc``, and nothing at all for root."""
    import os  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    try:
        handle, probe = tempfile.mkstemp(prefix=".dicom-meta-extract-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"output folder {folder!r} is not writable ({reason})") from exc
    os.close(handle)
    os.unlink(probe)
