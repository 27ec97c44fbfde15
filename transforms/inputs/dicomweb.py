"""DICOMweb sources: ``dicomweb+http://HOST:PORT/PREFIX`` (or ``dicomweb+https://``), the
service root of a PACS or VNA (Orthanc: ``.../dicom-web``), listed with QIDO-RS.

Listing: the studies (``/studies``, paged with ``limit``/``offset``, every page followed
until an empty one), then each study's series (``/studies/{uid}/series``), each step
reshuffled so that the series spread over the workers; each series is then read with
one WADO-RS metadata request (``transforms.reading.dicomweb_rows``), unless
``--incremental`` reuses it (``transforms.output.web_reuse``). Nothing is kept on
the launching machine: the listing runs on the workers, on any runner.

HTTP goes through ``dicomweb-client`` on a ``requests`` session whose adapter retries
with urllib3's ``Retry``: 429, 500, 502, 503 and 504 answers, timeouts and dropped
connections are retried with exponential backoff, ``Retry-After`` honoured up to
``RETRY_AFTER_MAX`` seconds; every request has a timeout. Secrets (a password or a
bearer token in a file or an environment variable): ``dicomweb_secrets``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.common.tags import ERRORS
from transforms.inputs.dicomweb_secrets import Secret, SecretAuth, SecretError, read_secret
from transforms.inputs.storage import is_bucket, workers_see_only_buckets

SCHEMES = ("dicomweb+http://", "dicomweb+https://")
# Status codes worth another try (PS3.18 8.6.1 and RFC 9110): overloaded or restarting.
RETRY_STATUSES = (429, 500, 502, 503, 504)
# A Retry-After longer than this is cut to it: a run never sleeps for hours.
RETRY_AFTER_MAX = 60
# Series-level return keys (PS3.18 Table 10.6.3-5) the listing needs.
STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
SERIES_INSTANCES = "00201209"  # Number of Series Related Instances
DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")


class DicomWebError(Exception):
    """A DICOMweb source that cannot be used: one line for the user."""


def is_dicomweb(path: str) -> bool:
    return path.lower().startswith(SCHEMES)


def is_dicomweb_row(path: str) -> bool:
    """A ``DicomPath`` of a DICOMweb instance (its WADO-RS URL): no matched file has one."""
    return path.startswith(("http://", "https://"))


def service_root(path: str) -> str:
    """``dicomweb+https://h/p/`` -> ``https://h/p``: the URL requests go to.

    Credentials in the URL are refused: they would be written in every ``DicomPath``."""
    root = path.split("+", 1)[1].rstrip("/")
    authority = root.split("://", 1)[1].split("/", 1)[0]
    if "@" in authority:
        raise DicomWebError(
            f"input {redact_url(path)!r}: credentials in the URL would be written into every "
            "DicomPath; use --dicomweb-user with --dicomweb-password-file or "
            "--dicomweb-password-env, or a bearer token"
        )
    if not authority:
        raise DicomWebError(f"input {path!r}: no host in the DICOMweb URL")
    return root


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://***@host/...``."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


@dataclass(frozen=True)
class DicomWebSettings:
    """How to reach the DICOMweb sources and what to list; pickled into the DoFns, with
    the secrets' places, not their values (``Secret``)."""

    user: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    timeout: float = 60.0
    retries: int = 5
    page_size: int = 100
    study_date: str | None = None
    modalities: tuple = ()

    @classmethod
    def from_options(cls, options) -> "DicomWebSettings":
        try:
            password = read_secret(options.dicomweb_password_file,
                                   options.dicomweb_password_env, "password")
            token = read_secret(options.dicomweb_token_file, options.dicomweb_token_env,
                                "bearer token")
        except SecretError as exc:
            raise DicomWebError(str(exc)) from exc
        if token is not None and (password is not None or options.dicomweb_user):
            raise DicomWebError("give either --dicomweb-user with a password or a bearer "
                                "token, not both")
        if (password is None) != (not options.dicomweb_user):
            raise DicomWebError("--dicomweb-user needs --dicomweb-password-file or "
                                "--dicomweb-password-env, and a password needs a user")
        for secret, flag in ((password, "--dicomweb-password-file"),
                             (token, "--dicomweb-token-file")):
            if secret is not None and workers_see_only_buckets(options) and \
                    not is_bucket(secret.path or ""):
                raise DicomWebError(
                    f"on Dataflow the workers read the {secret.what} themselves, and neither "
                    f"this machine's files nor its environment reach them: give {flag} "
                    "gs://BUCKET/FILE, readable by the workers' service account")
        if options.dicomweb_ca_bundle and not os.path.isfile(options.dicomweb_ca_bundle):
            raise DicomWebError(f"CA bundle {options.dicomweb_ca_bundle!r} is not a file")
        return cls(
            user=options.dicomweb_user, password=password, token=token,
            ca_bundle=options.dicomweb_ca_bundle, timeout=options.dicomweb_timeout,
            retries=options.dicomweb_retries, page_size=options.dicomweb_page_size,
            study_date=options.study_date, modalities=tuple(options.modality or ()),
        )

    def session(self, retries: int | None = None):
        """A ``requests`` session with the credentials, the CA bundle and retries."""
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        count = self.retries if retries is None else retries
        retry = Retry(
            total=count, connect=count, read=count, status=count, other=0,
            allowed_methods=frozenset({"GET"}), status_forcelist=RETRY_STATUSES,
            backoff_factor=0.5, backoff_max=30, backoff_jitter=0.25,
            respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX,
            raise_on_status=False,  # the last answer is returned and raised as HTTPError
        )
        class Adapter(HTTPAdapter):
            """Retries; and the CA bundle on every request: ``session.verify`` alone loses
            to a REQUESTS_CA_BUNDLE in the environment (requests merges the request's
            environment settings over the session's)."""

            def send(self, request, **kwargs):  # pylint: disable=arguments-differ
                if ca_bundle:
                    kwargs["verify"] = ca_bundle
                return super().send(request, **kwargs)

        ca_bundle = self.ca_bundle
        session = requests.Session()
        adapter = Adapter(max_retries=retry, pool_maxsize=16)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if self.user is not None and self.password is not None:
            session.auth = SecretAuth(self.user, self.password)
        elif self.token is not None:
            session.auth = SecretAuth(None, self.token)
        return session

    def client(self, root: str, retries: int | None = None):
        """A ``dicomweb_client.DICOMwebClient`` for the service root ``root`` (http(s)).

        Its own retrying is off: the session's adapter retries, honouring Retry-After."""
        from dicomweb_client import DICOMwebClient

        client = DICOMwebClient(root, session=self.session(retries),
                                timeout=(min(10.0, self.timeout), self.timeout))
        client.set_http_retry_params(retry=False)
        return client

    def study_filters(self) -> dict:
        filters = {}
        if self.study_date:
            filters["StudyDate"] = self.study_date
        if self.modalities:  # a list of values is comma-separated (PS3.18 8.3.4.1)
            filters["ModalitiesInStudy"] = ",".join(self.modalities)
        return filters


def study_date_range(text: str) -> str:
    """``--study-date``: ``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``-YYYYMMDD`` or
    ``YYYYMMDD-`` (QIDO-RS range matching, PS3.4 C.2.2.2.5)."""
    match = DATE_RANGE.match(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a date or date range such as 20240101-20241231")
    return text.strip()


study_date_range.__name__ = "date range"


def modality_list(text: str) -> list:
    """``--modality CT,MR`` -> ``["CT", "MR"]``."""
    values = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not values or not all(re.fullmatch(r"[A-Z0-9_ ]{1,16}", value) for value in values):
        raise ValueError(f"{text!r} is not a comma-separated list of modalities such as CT,MR")
    return values


modality_list.__name__ = "modality list"


def http_reason(exc: BaseException) -> str:
    """A request's failure in words: the HTTP status, or what the connection did."""
    import requests
    from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

    response = getattr(exc, "response", None)
    if isinstance(exc, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS certificate not trusted (see --dicomweb-ca-bundle)"
    # requests wraps what urllib3's retries ended with: the last cause says what happened.
    cause = next((arg.reason for arg in exc.args if isinstance(arg, MaxRetryError)), exc)
    if isinstance(cause, (ReadTimeoutError, requests.Timeout)) or isinstance(exc, requests.Timeout):
        return "no answer within the timeout (--dicomweb-timeout)"
    if isinstance(cause, ProtocolError):
        return "the connection was dropped"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (refused or unreachable)"
    return f"{type(exc).__name__}: {exc}"


def check_source(path: str, settings: DicomWebSettings) -> str:
    """At launch: one QIDO-RS search (limit 1) proves the server answers and takes the
    credentials; returns the service root. ``DicomWebError`` otherwise."""
    root = service_root(path)
    try:
        settings.client(root, retries=1).search_for_studies(limit=1)
    except Exception as exc:  # pylint: disable=broad-except
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise DicomWebError(f"input {path!r}: the server refused the credentials "
                                f"({http_reason(exc)})") from exc
        raise DicomWebError(f"input {path!r}: DICOMweb server not usable: "
                            f"{http_reason(exc)}") from exc
    return root


def first_value(dataset: dict, tag: str):
    values = (dataset.get(tag) or {}).get("Value") or [None]
    return values[0]


class SeriesRef(NamedTuple):
    """One series to read: its service root (http(s)), study and series UIDs, and the
    instances QIDO-RS said it holds (-1: not said). ``previous``: with ``--incremental``,
    the previous output's row paths of a series read again because its instance search
    failed; those its metadata no longer lists are counted dropped when it is read
    (``output/web_reuse.py``)."""

    root: str
    study: str
    series: str
    instances: int
    previous: tuple = ()

    @property
    def url(self) -> str:
        return f"{self.root}/studies/{self.study}/series/{self.series}"


class _Lister(beam.DoFn):
    def __init__(self, settings: DicomWebSettings):
        self.settings = settings
        self.clients: dict = {}

    def setup(self):
        self.clients = {}

    def client(self, root: str):
        if root not in self.clients:
            self.clients[root] = self.settings.client(root)
        return self.clients[root]


class ListStudies(_Lister):
    """A service root -> ``(root, study UID)`` of every study the filters match, page by
    page (``limit``/``offset``) until the server answers an empty page. A page that still
    fails after the retries is an ``ERRORS`` record named by the root: the listing is
    incomplete and says so, and the run goes on."""

    def process(self, root: str):
        client = self.client(root)
        seen = set()
        offset, page = 0, None
        while page is None or page:
            try:
                page = client.search_for_studies(
                    limit=max(1, self.settings.page_size), offset=offset,
                    fields=["StudyInstanceUID"], search_filters=self.settings.study_filters(),
                )
            except Exception as exc:  # pylint: disable=broad-except
                yield listing_error(root, f"study search failed at offset {offset}", exc)
                break
            offset += len(page)
            for study in page:
                uid = first_value(study, STUDY_UID)
                if uid and uid not in seen:  # a study added while paging may shift a page
                    seen.add(uid)
                    yield root, uid


def listing_error(url: str, what: str, exc: BaseException):
    """The ``ERRORS`` record of a listing step that failed: ``Unreadable``."""
    return beam.pvalue.TaggedOutput(ERRORS, (
        url, "Unreadable", f"{what}: {http_reason(exc)}",
        f"{type(exc).__name__}: {exc}",
    ))


class ListSeries(_Lister):
    """``(root, study UID)`` -> a ``SeriesRef`` per series (of the chosen modalities)."""

    def __init__(self, settings: DicomWebSettings):
        super().__init__(settings)
        self.listed = Metrics.counter("dicom", "dicomweb_series_listed")

    def process(self, root_study):
        root, study = root_study
        try:
            series_list = self.client(root).search_for_series(
                study, fields=["Modality", "NumberOfSeriesRelatedInstances"],
            )
        except Exception as exc:  # pylint: disable=broad-except
            yield listing_error(f"{root}/studies/{study}", "series search failed", exc)
            series_list = []
        wanted = set(self.settings.modalities)
        seen = set()  # a server may list a series twice (Orthanc: one study UID, two patients)
        for series in series_list:
            uid = first_value(series, SERIES_UID)
            if not uid or uid in seen or (wanted and first_value(series, MODALITY) not in wanted):
                continue
            seen.add(uid)
            count = first_value(series, SERIES_INSTANCES)
            self.listed.inc()
            yield SeriesRef(root, study, uid, int(count) if count is not None else -1)


class ListDicomWeb(beam.PTransform):
    """DICOMweb inputs -> {"series": a ``SeriesRef`` per series, spread over the workers;
    ERRORS: listing steps that failed}."""

    def __init__(self, roots: list, settings: DicomWebSettings):
        super().__init__()
        self.roots = sorted({service_root(root) if is_dicomweb(root) else root for root in roots})
        self.settings = settings

    def expand(self, pbegin):
        studies = (
            pbegin
            | "Roots" >> beam.Create(self.roots)
            | "Studies" >> beam.ParDo(ListStudies(self.settings)).with_outputs(ERRORS, main="studies")
        )
        series = (
            studies.studies
            | "SpreadStudies" >> beam.Reshuffle()
            | "Series" >> beam.ParDo(ListSeries(self.settings)).with_outputs(ERRORS, main="series")
        )
        return {
            "series": series.series | "SpreadSeries" >> beam.Reshuffle(),
            ERRORS: (studies[ERRORS], series[ERRORS]) | "ListingErrors" >> beam.Flatten(),
        }
