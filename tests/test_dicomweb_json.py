"""The direct DICOM-JSON-to-row conversion against the reference (``Dataset.from_json``
and ``flatten``) over every instance of a real Orthanc holding every pydicom test file
it accepts (the differential test's server, ``test_dicomweb.py``) and a generated
archive (RT structures, RT plans, enhanced MR, CT and MR series): the same row, cell for
cell, column order included, or the same error (``transforms/reading/dicomweb_json.py``).
"""

from __future__ import annotations

import copy
import glob
import os

import pytest
from dicomweb_client import DICOMwebClient

from benchmarks.make_archive import generate
from conftest import CHARSET_FILES, TEST_FILES
from dicomweb_servers import Orthanc
from test_dicomweb import require_orthanc
from transforms.reading.dicomweb_json import direct_row, instance_row, pydicom_row
from transforms.reading.extract import quiet_pydicom
from transforms.reading.flatten import FlattenSettings


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    """(series URL, DICOM JSON) of every instance Orthanc lists, fetched as the tool
    fetches them (WADO-RS metadata of each series)."""
    require_orthanc()
    generated = tmp_path_factory.mktemp("generated")
    generate(str(generated), 120, small=True, seed=3)
    server = Orthanc(str(tmp_path_factory.mktemp("orthanc")))
    try:
        paths = (glob.glob(TEST_FILES + "/**/*", recursive=True) + glob.glob(CHARSET_FILES + "/*")
                 + glob.glob(str(generated) + "/**/*", recursive=True))
        for path in sorted(paths):
            if os.path.isfile(path):
                with open(path, "rb") as stream:
                    server.upload(stream.read())
        client = DICOMwebClient(server.root)
        found = []
        for study in client.search_for_studies(get_remaining=True):
            study_uid = study["0020000D"]["Value"][0]
            for series in client.search_for_series(study_uid):
                series_uid = series["0020000E"]["Value"][0]
                url = f"{server.root}/studies/{study_uid}/series/{series_uid}"
                try:
                    metadata = client.retrieve_series_metadata(study_uid, series_uid)
                except Exception:  # pylint: disable=broad-except  # one UID, two patients: 404
                    continue
                found.extend((url, instance) for instance in metadata)
        yield found
    finally:
        server.stop()


def outcome(convert, instance, url, settings):
    """The row (with its column order) or the error a conversion gives."""
    try:
        row = convert(copy.deepcopy(instance), url, 1, settings)
    except Exception as exc:  # pylint: disable=broad-except
        return f"{type(exc).__name__}: {exc}"
    return row, list(row.values), list(row.vrs)


def reference(instance, url, _index, settings):
    return pydicom_row(instance, f"{url}/instances/x", settings)


def new(instance, url, _index, settings):
    return instance_row(instance, url, 1, settings)._replace(path=f"{url}/instances/x")


@pytest.mark.parametrize("settings", [
    FlattenSettings(), FlattenSettings(max_sequence_items=1),
    FlattenSettings(max_sequence_items=0, max_binary_bytes=4),
    FlattenSettings(include_private=True),
], ids=["default", "one-item", "all-items", "private"])
def test_direct_rows_equal_reference_rows(instances, settings):
    quiet_pydicom()
    assert len(instances) > 200
    direct = 0
    for url, instance in instances:
        expected = outcome(reference, instance, url, settings)
        if isinstance(expected, tuple):  # the path is the instance's own in both
            expected[0].values["DicomPath"] = f"{url}/instances/x"
        got = outcome(new, instance, url, settings)
        if isinstance(got, tuple):
            got[0].values["DicomPath"] = f"{url}/instances/x"
        assert got == expected, url
        direct += direct_row(copy.deepcopy(instance), "", settings) is not None
    print(f"{direct} of {len(instances)} instances converted directly")
    if settings.include_private:
        assert direct == 0  # private names need their creators: the reference's
    else:  # the direct conversion is the common case, not a fallback that never runs
        assert direct > 0.9 * len(instances), (direct, len(instances))


def test_direct_row_leaves_the_json_alone(instances):
    for _, instance in instances[:50]:
        kept = copy.deepcopy(instance)
        assert direct_row(instance, "", FlattenSettings()) is not None
        assert instance == kept
