"""UTF-8, the one module that checks it (ouistiti_gw.core.utf8): a client's text, a server's reads."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ouistiti_gw.core.frames import CloseCode, ProtocolViolation
from ouistiti_gw.core.utf8 import Utf8Splitter, Utf8Validator, check_message, is_utf8


@given(text=st.text(max_size=40), cuts=st.lists(st.integers(min_value=0, max_value=160), max_size=4))
def test_utf8_validator_accepts_valid_text_cut_anywhere(text, cuts):
    data = text.encode()  # hypothesis' text() holds no surrogates
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    validator = Utf8Validator()
    for a, b in zip(bounds, bounds[1:]):
        validator.feed(data[a:b])
    validator.feed(b"", final=True)


@pytest.mark.parametrize("prefix", [b"\xc0", b"\xe0\x80", b"\xed\xa0", b"\xed\xbf", b"\xf4\x90", b"\xf5", b"\x80"])
def test_utf8_validator_fails_on_the_first_impossible_byte(prefix):
    """Autobahn 6.4: a prefix no valid text can start with fails before anything follows it
    (``ED A0``, a surrogate's start, is the one Python's codec alone would keep pending)."""
    with pytest.raises(ProtocolViolation) as raised:
        Utf8Validator().feed(b"ok " + prefix)
    assert raised.value.code == CloseCode.INVALID_DATA


def test_utf8_validator_fails_on_a_truncated_end():
    validator = Utf8Validator()
    validator.feed(b"caf\xc3")
    with pytest.raises(ProtocolViolation):
        validator.feed(b"", final=True)

@pytest.mark.parametrize("cut", range(1, len("é€𝄞".encode())))
def test_a_validator_goes_on_from_another_ones_pending_bytes(cut):
    """What a reload carries for a text message cut inside a character: the successor's
    validator completes it, or fails it, as the first one would have."""
    data = "é€𝄞".encode()
    first = Utf8Validator()
    first.feed(data[:cut])
    assert data[:cut].endswith(first.pending)
    second = Utf8Validator(first.pending)
    second.feed(data[cut:], final=True)
    if first.pending:  # a character is open: an ASCII byte cannot continue it
        with pytest.raises(ProtocolViolation):
            Utf8Validator(first.pending).feed(b"\x00")


def test_a_validator_restored_on_a_surrogates_start_fails_on_the_next_byte():
    with pytest.raises(ProtocolViolation) as raised:
        Utf8Validator(b"\xed").feed(b"\xa0")
    assert raised.value.code == CloseCode.INVALID_DATA


@pytest.mark.parametrize("data, valid", [(b"ascii", True), ("é€𝄞".encode(), True), (b"", True),
                                         (b"caf\xc3", False), (b"\xed\xa0\x80", False), (b"\xff", False)])
def test_a_whole_message_and_a_servers_read_are_judged_alike(data, valid):
    """One decision for both directions: a client's whole text message (1007 if not UTF-8) and
    a server's packet (text if UTF-8, else binary)."""
    assert is_utf8(data) is valid
    if valid:
        check_message(data)
    else:
        with pytest.raises(ProtocolViolation) as raised:
            check_message(data)
        assert raised.value.code == CloseCode.INVALID_DATA


def test_the_splitter_keeps_a_cut_character_for_the_next_read():
    splitter = Utf8Splitter()
    assert splitter.feed("caf".encode() + b"\xc3") == (b"caf", True)
    assert splitter.feed(b"\xa9!") == ("é!".encode(), True)
    assert splitter.feed(b"\xe2\x82") == (b"", True)
    assert splitter.flush() == b"\xe2\x82"
    assert splitter.feed(b"\xff") == (b"\xff", False)
