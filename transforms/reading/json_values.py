"""The DICOM JSON of an element straight from its stored bytes, for the common cases.

``dicom_json`` used to convert every element with pydicom (``Dataset[tag]``: a
``DataElement``, its ``DSfloat``/``IS``/``PersonName`` values, then
``DataElement.to_json_dict``); an RT Structure Set's contour data alone is hundreds of
thousands of ``DSfloat``. ``element_json`` makes the same dict from the raw element's
bytes for the values whose conversion it reproduces exactly, and returns ``None`` for
everything else, which pydicom converts as before:

* numbers (US SS UL SL UV SV FL FD): little endian, a whole number of values; not the
  LUT descriptors (pydicom fixes their first value);
* DS and IS whose every value is a plain decimal number (no empty value, no NaN);
* text of the default character set (AE AS CS DA DT TM UI UR), ASCII only;
* text of the item's character set (SH LO UC LT ST UT PN), ASCII only and without
  escape sequences (every character set pydicom knows reads ASCII as ASCII); person
  names only with one component group each and no empty name;
* binary (OB OD OF OL OV OW): inline, or left out past ``--max-binary-bytes``;
* no implicit VR that the dictionary does not give one VR for, no UN, no AT, no SQ.

``numbers_as_written`` goes one step further for ``json_reader``: DS and IS text that is
already what the encoder would write for its numbers, once stripped, goes into the line
as it is (no float, no repr).

``tests/test_json_values.py`` checks that every file of pydicom's test set gives the
same JSON either way (``dicom_json.draft(..., reference=True)`` converts every element
with pydicom); ``tests/test_json_reader.py`` checks ``numbers_as_written`` on random text.
"""

from __future__ import annotations

import base64
import functools
import operator
import re
import struct

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.tag import _LUT_DESCRIPTOR_TAGS

from transforms.common.rows import NUMBER_FORMATS

LEFT_OUT_KEY = "LeftOutBytes"
UNDEFINED = 0xFFFFFFFF
_NUMBER = r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})? *"
_DECIMALS = re.compile(rf"{_NUMBER}(?:\\{_NUMBER})*")
# At most 15 digits: IS keeps a value as int only when float(text) equals it.
_INTEGER = r" *[+-]?[0-9]{1,15} *"
_INTEGERS = re.compile(rf"{_INTEGER}(?:\\{_INTEGER})*")
_SIZES = {vr: struct.calcsize("<" + fmt) for vr, fmt in NUMBER_FORMATS.items()}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_LUT_DESCRIPTORS = frozenset(int(tag) for tag in _LUT_DESCRIPTOR_TAGS)


# DS and IS values in the form the encoder writes their numbers (Python's float and
# int repr), once a DS's fraction has lost its trailing zeros ("-176.80" is written
# -176.8, "100.00" 100.0), so that their text goes into the JSON as it is: a DS of at
# most 15 significant digits (DBL_DIG: the double nearest it gives them back as its
# shortest repr), no exponent and within repr's fixed notation (1e-4 <= |x| < 1e16);
# an IS without sign or leading zero but "-". Contour Data and leaf positions are
# mostly such text (an RT Structure Set holds hundreds of kB of it): no float and no
# repr per value, and the quantifiers possessive, as no value gives back what it took
# (the checks cost a third of the backtracking ones).
_DS_VALUE = (rb"-?+(?:[1-9][0-9]{0,6}+|0(?!\.0000))\.[0-9]{1,8}+"
             rb"(?:(?<=[1-9])|(?<=\.0))")  # the fraction "0" or ending in 1-9
_IS_VALUE = rb"(?:0|-?+[1-9][0-9]{0,14}+)"
_AS_WRITTEN = {
    "DS": re.compile(rb"(?:%s\\)*+%s" % (_DS_VALUE, _DS_VALUE)).fullmatch,
    "IS": re.compile(rb"(?:%s\\)*+%s" % (_IS_VALUE, _IS_VALUE)).fullmatch,
}
# The regular expression's way to strip a fraction's trailing zeros, one call per
# value: only where the fast way below meets a long run of zeros.
_TRAILING_ZEROS = re.compile(rb"(\.[0-9]*?[0-9])0+(?=\\|$)").sub
_KEPT_DIGITS = operator.itemgetter(1)
_ZERO_ROUNDS = 8


def _without_trailing_zeros(numbers: bytes) -> bytes:
    """DS text with each value's fraction stripped of its trailing zeros down to one
    digit ("-176.80" -176.8, "100.00" 100.0). A value without a fraction may lose its
    zeros too ("100" 1): ``_AS_WRITTEN`` refuses it then (no ".") and the value goes
    the maker's way, from the bytes as read. A round of ``bytes.replace`` drops one
    zero of every value at C speed; past a few rounds, the regular expression's way."""
    text = numbers + b"\\"
    for _ in range(_ZERO_ROUNDS):
        if b"0\\" not in text:
            return text.replace(b".\\", b".0\\")[:-1]
        text = text.replace(b"0\\", b"\\")
    return _TRAILING_ZEROS(_KEPT_DIGITS, numbers)


def numbers_as_written(vr: str, value: bytes) -> bytes | None:
    """A DS or IS element's bytes as the JSON numbers the encoder would write (values
    apart by backslashes), or None: the maker's way (``VALUE_MAKERS``). ``json_reader``
    puts such text into the line as it is."""
    numbers = value.rstrip(b" \0")  # padding, as pydicom strips it
    if vr == "DS" and (numbers[-1:] == b"0" or b"0\\" in numbers):
        numbers = _without_trailing_zeros(numbers)
    return numbers if _AS_WRITTEN[vr](numbers) else None


AS_WRITTEN_VRS = frozenset(_AS_WRITTEN)


def supported() -> bool:
    """Whether pydicom's configuration converts values as this module assumes."""
    return not (config.use_DS_numpy or config.use_IS_numpy or config.use_DS_decimal
                or config.datetime_conversion or config.use_none_as_empty_text_VR_value
                or config.settings.reading_validation_mode == config.RAISE)


@functools.lru_cache(maxsize=1 << 14)
def implicit_vr(tag: int) -> str | None:
    """The dictionary's one VR of a public tag, else None (pydicom decides)."""
    if (tag >> 16) & 1:
        return None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return None if " or " in vr else vr


def _values(vr: str, values: list) -> dict:
    # One empty text is no value (pydicom's VM 0); several keep their empty ones.
    if len(values) == 1 and not values[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _multi(vr, value, tag, max_binary_bytes):  # AS CS DA DT TM
    if not value.isascii():
        return None
    return _values(vr, value.decode("ascii").rstrip(" \0").split("\\"))


def _ui(vr, value, tag, max_binary_bytes):
    if not value.isascii():
        return None
    text = value.decode("ascii").rstrip("\0 ")
    return _values(vr, [item.strip() for item in text.split("\\")])


def _ae(vr, value, tag, max_binary_bytes):
    if not value.isascii():
        return None
    return _values(vr, [item.strip() for item in value.decode("ascii").split("\\")])


def _ur(vr, value, tag, max_binary_bytes):
    if not value.isascii():
        return None
    return _values(vr, [value.decode("ascii").rstrip()])


def _charset_multi(vr, value, tag, max_binary_bytes):  # SH LO UC
    # An escape sequence: the character set's decoder decides.
    if not value.isascii() or b"\x1b" in value:
        return None
    return _values(vr, [item.rstrip("\0 ") for item in value.decode("ascii").split("\\")])


def _charset_single(vr, value, tag, max_binary_bytes):  # LT ST UT
    if not value.isascii() or b"\x1b" in value:
        return None
    return _values(vr, [value.decode("ascii").rstrip("\0 ")])


def _pn(vr, value, tag, max_binary_bytes):
    if not value.isascii() or b"\x1b" in value or b"=" in value:
        return None
    names = value.rstrip(b"\0 ").decode("ascii").split("\\")
    if len(names) == 1 and not names[0]:
        return {"vr": vr}
    if not all(names):
        return None
    return {"vr": vr, "Value": [{"Alphabetic": name} for name in names]}


def _ds(vr, value, tag, max_binary_bytes):
    text = value.decode("latin-1").strip().rstrip(" \0")
    if not text.isascii() or not _DECIMALS.fullmatch(text):
        return None
    return {"vr": vr, "Value": [float(item) for item in text.split("\\")]}


def _is(vr, value, tag, max_binary_bytes):
    text = value.decode("latin-1").rstrip(" \0")
    if not text.isascii() or not _INTEGERS.fullmatch(text):
        return None
    return {"vr": vr, "Value": [int(item) for item in text.split("\\")]}


def _numbers(vr, value, tag, max_binary_bytes):
    count, rest = divmod(len(value), _SIZES[vr])
    if rest or tag in _LUT_DESCRIPTORS:
        return None
    return {"vr": vr, "Value": list(struct.unpack(f"<{count}{NUMBER_FORMATS[vr]}", value))}


def _binary(vr, value, tag, max_binary_bytes):
    if len(value) > max_binary_bytes:
        return {"vr": vr, LEFT_OUT_KEY: len(value)}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


_MAKERS = {
    **{vr: _multi for vr in ("AS", "CS", "DA", "DT", "TM")},
    "UI": _ui, "AE": _ae, "UR": _ur, "PN": _pn, "DS": _ds, "IS": _is,
    **{vr: _charset_multi for vr in ("SH", "LO", "UC")},
    **{vr: _charset_single for vr in ("LT", "ST", "UT")},
    **{vr: _numbers for vr in NUMBER_FORMATS},
    **{vr: _binary for vr in _BINARY},
}
# VR -> maker(vr, value, tag, max_binary_bytes) of a non-empty value's dict (or None):
# also ``json_reader``'s, which has the bytes without a RawDataElement.
VALUE_MAKERS = _MAKERS


def element_json(raw, tag: int, max_binary_bytes: int) -> dict | None:
    """``raw`` (a ``RawDataElement`` whose value was read) as pydicom's
    ``to_json_dict`` gives it, or None when pydicom must convert it."""
    value = raw.value
    if not raw.is_little_endian or raw.length == UNDEFINED or value.__class__ is not bytes:
        return None
    vr = raw.VR
    if vr is None:
        vr = implicit_vr(tag)
        if vr is None:
            return None
    maker = _MAKERS.get(vr)
    if maker is None:  # SQ UN AT
        return None
    if not value:
        return {"vr": vr}
    return maker(vr, value, tag, max_binary_bytes)
