"""Where secrets live: a DICOMweb password or token (``transforms/inputs/dicomweb_secrets.py``)
and the pseudonym key (``transforms/content/pseudonyms.py``, ``PseudonymKey``).

Read at launch to check them, then read again by every worker process from the same file
or environment variable: the pipeline's pickled steps carry where a secret is kept,
never its value (only a random pseudonym key, which has no file, travels as it is). Against a real Orthanc with basic authentication: workers in their own
processes authenticate from the file; a file changed after launch is what they use; a
file gone is a clear error per request, not a hang or a traceback."""

from __future__ import annotations

import os
import pickle

import pytest
from apache_beam.internal import pickler

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.cli import main
from beam_pipeline.options import DicomExtractOptions
from transforms.content.pseudonyms import KeyFileError, Pseudonyms
from transforms.content.settings import ContentSettings, RowContent, TablePath
from tests.test_dicomweb import PASSWORD, USER, read_rows, secured_server  # noqa: F401  # fixture
from transforms.inputs.dicomweb import DicomWebSettings, ListStudies, http_reason
from transforms.inputs.dicomweb_secrets import Secret, SecretError, read_secret


def test_a_pickled_secret_holds_its_place_not_its_value(tmp_path, monkeypatch):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    monkeypatch.setenv("DICOMWEB_TOKEN_UNDER_TEST", "tok-env-51a7")
    password = read_secret(str(password_file), None, "password")
    token = read_secret(None, "DICOMWEB_TOKEN_UNDER_TEST", "bearer token")
    assert password.reveal() == PASSWORD and token.reveal() == "tok-env-51a7"
    settings = DicomWebSettings(user=USER, password=password)
    # The bytes a runner ships: Beam's own pickler of a step, and plain pickle.
    shipped = [pickler.dumps(ListStudies(settings)), pickle.dumps(settings), pickle.dumps(token)]
    for data in shipped[1:]:
        assert PASSWORD.encode() not in data and b"tok-env-51a7" not in data
    assert str(password_file).encode() in shipped[1]  # the place travels
    step = pickler.loads(shipped[0])
    assert step.settings.password.reveal() == PASSWORD  # read again from the file
    password_file.write_text("rotated-after-launch")
    assert pickle.loads(shipped[1]).password.reveal() == "rotated-after-launch"
    monkeypatch.setenv("DICOMWEB_TOKEN_UNDER_TEST", "tok-rotated")
    assert pickle.loads(shipped[2]).reveal() == "tok-rotated"
    assert "tok" not in repr(token) and "rotated" not in repr(pickle.loads(shipped[1]))

    password_file.unlink()
    with pytest.raises(SecretError, match=r"cannot read the password file .*password"):
        pickle.loads(shipped[1]).password.reveal()
    monkeypatch.delenv("DICOMWEB_TOKEN_UNDER_TEST")
    with pytest.raises(SecretError, match="DICOMWEB_TOKEN_UNDER_TEST .* not set"):
        pickle.loads(shipped[2]).reveal()
    with pytest.raises(SecretError, match="given as a value"):
        pickle.loads(pickle.dumps(Secret("in-memory only"))).reveal()


def test_workers_authenticate_from_the_file_themselves(secured_server, tmp_path):  # noqa: F811
    """Two worker processes read the file; the launcher's copy is not what they use."""
    server, count = secured_server
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    out = tmp_path / "out"
    out.mkdir()
    assert main([server.input, "-o", str(out / "scan.csv"), "--dicomweb-user", USER,
                 "--dicomweb-password-file", str(password_file), "--quiet",
                 "--direct_running_mode=multi_processing", "--direct_num_workers=2"]) == 0
    assert len(read_rows(out / "scan.csv")) == count

    settings = DicomWebSettings(user=USER, password=read_secret(str(password_file), None,
                                                                "password"), retries=0)
    shipped = pickle.dumps(settings)
    password_file.write_text("changed-after-launch")
    with pytest.raises(Exception) as refused:
        pickle.loads(shipped).client(server.url + "/dicom-web").search_for_studies(limit=1)
    assert http_reason(refused.value).startswith("HTTP 401")
    password_file.unlink()
    with pytest.raises(Exception) as unreadable:
        pickle.loads(shipped).client(server.url + "/dicom-web").search_for_studies(limit=1)
    reason = http_reason(unreadable.value)
    assert reason.startswith("SecretError: cannot read the password file")
    assert str(password_file) in reason and os.strerror(2) in reason


def _content(*flags) -> ContentSettings:
    return ContentSettings.from_options(PipelineOptions(["--deidentify", *flags])
                                        .view_as(DicomExtractOptions))


def test_a_pickled_pseudonym_key_holds_its_file_not_its_value(tmp_path):
    key_file = tmp_path / "site.key"
    key_file.write_text("5e" * 32 + "\n")
    key = ("5e" * 32).encode()
    settings = _content("--pseudonym-key-file", str(key_file), "--pseudonymize-paths")
    path = TablePath(settings)
    expected = path("/archive/CT1.dcm")
    shipped = [pickler.dumps(RowContent(settings)), pickle.dumps(settings), pickle.dumps(path)]
    for data in shipped[1:]:
        assert key not in data and str(key_file).encode() in data
    assert key not in repr(settings).encode() and "5e5e" not in repr(settings.key)
    assert pickle.loads(shipped[2])("/archive/CT1.dcm") == expected  # read again, same key
    assert pickler.loads(shipped[0]).settings.key.value() == key
    assert settings.key_fingerprint == Pseudonyms(key).fingerprint
    assert settings.key_fingerprint.encode() in shipped[1]
    key_file.write_text("4a" * 32)  # changed during the run: an error, not other pseudonyms
    with pytest.raises(KeyFileError, match="changed since the run started"):
        pickle.loads(shipped[2])("/archive/CT1.dcm")
    key_file.write_text("too short")
    with pytest.raises(KeyFileError, match="holds 9 bytes"):
        pickle.loads(shipped[2])("/archive/CT1.dcm")
    key_file.unlink()
    with pytest.raises(KeyFileError, match="cannot read key file"):
        pickle.loads(shipped[1]).key.value()
    # A random key has no file to be read from: it is the one that travels.
    random = _content()
    assert random.key_source == "random"
    assert random.key.value() in pickle.dumps(random)
