"""DICOMweb reuse with ``--incremental``: which series' rows the previous output already
holds, and which series to read again.

The rule. A series is reused when the previous output (the generation ``CURRENT``
names) holds it complete and a QIDO-RS search of its instances now lists exactly the
instances it holds:

* complete: every instance of the series is a row of that generation (its DicomPath,
  the WADO-RS URL, names the series), and no error of that generation names the series
  or one of its instances (errors are always retried);
* unchanged: ``/studies/{study}/series/{series}/instances``, asking only for SOP
  Instance UID and paged like the other searches, gives exactly the SOP Instance UIDs of
  those rows (the same set, hence the same count).

Its rows are then carried into this run's generation like a reused file's (the old
shards are re-read, never shuffled: ``reuse.RespillRows``); every other series is read
again with its WADO-RS metadata request. A series the listing no longer finds drops its
outcomes, and an instance the search no longer lists drops its row: both count in
``files_dropped``. If the instance search fails, the series is read again, carrying
its previous row paths: the reader counts those its metadata no longer lists
(``reading/dicomweb_rows.py``), so every previous row that is gone counts once, whichever
way its series went. Only when the metadata request fails too is nothing known of what
is gone, and nothing is counted.

What it assumes: an instance is never changed on the server under the same SOP Instance
UID. DICOM requires a new SOP Instance UID for changed content (PS3.3 C.12.1.1.1,
PS3.4), but a server edited in place would not be seen: a run without
``--incremental`` reads every series again. Only the previous output is reused, never an
interrupted run's rows (a run without ``--incremental`` reuses nothing of a DICOMweb
source), and only with the same settings and row code as any reuse (``state.py``).

The state is data (the previous generation's row shards and outcome parts); the search
runs on the workers, a few series at once per worker since requests wait on the server.
"""

from __future__ import annotations

import concurrent.futures
import re

import apache_beam as beam

from transforms.common.batches import BatchFiles
from transforms.common.tags import COUNTS, REUSE_ROWS, WEB_REUSED_UNITS
from transforms.inputs.dicomweb import DicomWebSettings, SeriesRef, first_value

SOP_INSTANCE_UID = "00080018"
# Series searched at once by one worker: each search waits on the server, not our CPU.
CONCURRENT_SEARCHES = 8
# The series part of a DICOMweb DicomPath: a row's or an instance error's
# (``.../series/{uid}/instances/{sop}``) or a series error's (``.../series/{uid}``).
_SERIES_PATH = re.compile(r"^(.*/studies/[^/]+/series/[^/]+)(?:/instances/[^/]+)?$")


def series_key(path: str) -> str | None:
    """The series URL a DICOMweb outcome belongs to; ``None`` for a listing error
    (named by the service root or a study), which belongs to no series."""
    match = _SERIES_PATH.match(path)
    return match.group(1) if match else None


def instance_uids(client, ref: SeriesRef, page_size: int) -> list:
    """The SOP Instance UIDs a QIDO-RS search of the series' instances lists now, page by
    page until an empty one (as the study search)."""
    uids, offset = [], 0
    while True:
        page = client.search_for_instances(
            ref.study, ref.series, limit=max(1, page_size), offset=offset,
            fields=["SOPInstanceUID"],
        )
        if not page:
            return uids
        offset += len(page)
        uids.extend(first_value(instance, SOP_INSTANCE_UID) for instance in page)


class CheckSeries(beam.DoFn):
    """Batches of ``(series URL, {"series": [SeriesRef], "old": [Entry]})`` -> the
    ``SeriesRef`` of each series to read; ``REUSE_ROWS`` ``(old shard, path)`` of each
    reused series' rows, ``WEB_REUSED_UNITS`` its instance count, and ``COUNTS``
    ``(name, count)`` of what was decided. ``old`` holds the previous output's entries."""

    def __init__(self, web: DicomWebSettings, progress=None):
        self.web = web
        self.progress = progress
        self.clients: dict = {}
        self.pool = None

    def setup(self):
        self.clients = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENT_SEARCHES)
        if self.progress is not None:
            self.progress.connect()

    def teardown(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def _search(self, joined):
        """The series' instance URLs now, or ``None`` where nothing is to be compared
        (no earlier rows) or the search failed (then the series is read again)."""
        url, groups = joined
        refs, old = groups["series"], groups["old"]
        if not refs or not any(entry.kind == "row" for entry in old):
            return None
        ref = refs[0]
        try:
            if ref.root not in self.clients:  # sessions are thread-safe for GET
                self.clients[ref.root] = self.web.client(ref.root)
            uids = instance_uids(self.clients[ref.root], ref, self.web.page_size)
        except Exception:  # pylint: disable=broad-except  # read again, as if changed
            return None
        return [f"{url}/instances/{uid}" for uid in uids]

    def process(self, batch):
        if self.pool is None:  # used without setup()
            self.setup()
        for joined, now in zip(batch, self.pool.map(self._search, batch)):
            yield from self._decide(joined, now)

    def _decide(self, joined, now):
        _, groups = joined
        refs, old = groups["series"], groups["old"]
        if not refs:  # gone from the listing: its outcomes are dropped
            yield beam.pvalue.TaggedOutput(
                COUNTS, ("files_dropped", len({entry.path for entry in old})))
            return
        rows: dict = {}
        for entry in sorted(old, key=lambda entry: str(entry.payload)):  # first shard by name
            if entry.kind == "row":
                rows.setdefault(entry.path, entry.payload)
        complete = rows and all(entry.kind == "row" for entry in old)
        if now is not None and complete and len(now) == len(rows) and set(now) == set(rows):
            yield from self._reused(rows)
            return
        yield beam.pvalue.TaggedOutput(COUNTS, ("dicomweb_series_read", 1))
        if now is not None:  # instances no longer listed: their rows are dropped
            yield beam.pvalue.TaggedOutput(COUNTS, ("files_dropped", len(set(rows) - set(now))))
            yield refs[0]
        else:  # the search failed: the reader counts what its metadata no longer lists
            yield refs[0]._replace(previous=tuple(sorted(rows)))

    def _reused(self, rows: dict):
        for path, shard in sorted(rows.items()):
            yield beam.pvalue.TaggedOutput(REUSE_ROWS, (shard, path))
        yield beam.pvalue.TaggedOutput(COUNTS, ("dicomweb_series_reused", 1))
        yield beam.pvalue.TaggedOutput(COUNTS, ("dicomweb_instances_reused", len(rows)))
        yield beam.pvalue.TaggedOutput(WEB_REUSED_UNITS, len(rows))
        if self.progress is not None:
            self.progress.matched(len(rows))
            self.progress.done(len(rows))

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()


class PlanSeriesReuse(beam.PTransform):
    """{"series": ``SeriesRef`` of every listed series, "old": ``(series URL, Entry)`` of
    the previous output's DICOMweb outcomes} -> {"read": the ``SeriesRef`` to read,
    REUSE_ROWS, WEB_REUSED_UNITS, COUNTS} (``CheckSeries``). Like the files' join, the
    ``CoGroupByKey`` shuffles only paths and shard names, never row values."""

    def __init__(self, web: DicomWebSettings, progress=None):
        super().__init__()
        self.web = web
        self.progress = progress

    def expand(self, inputs):
        return (
            {"series": inputs["series"] | "KeyByUrl" >> beam.Map(lambda ref: (ref.url, ref)),
             "old": inputs["old"]}
            | "Join" >> beam.CoGroupByKey()
            | "AsLists" >> beam.MapTuple(lambda url, groups: (
                url, {"series": list(groups["series"]), "old": list(groups["old"])}))
            | "Batch" >> BatchFiles(CONCURRENT_SEARCHES)
            | "Check" >> beam.ParDo(CheckSeries(self.web, self.progress))
            .with_outputs(REUSE_ROWS, WEB_REUSED_UNITS, COUNTS, main="read")
        )
