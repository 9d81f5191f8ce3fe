"""What a chat name (``WSHello NAME``) may be, and why one is refused.

A name is shown to every client of the room (and of every federated server),
in ``WSWelcome``, ``WSIs`` and ``WSPrivate``, so it must read as what it is:
no line breaks, escapes, NULs or invisible characters that make one name look
like another or rewrite a terminal.  The rules, checked on the name read as
UTF-8 and normalized to NFC (so ``e`` + combining acute and ``é`` are one name):

* 1 to :data:`MAX_LENGTH` characters;
* letters (Unicode categories ``L*``), combining marks (``M*``, not first),
  the ASCII digits and ``_ - .`` only; no controls, formats (zero-width
  characters), spaces, symbols, other punctuation, nor the invisible letters
  and marks that are Default_Ignorable_Code_Point (:data:`INVISIBLE`);
* not ending with :data:`NUMBER_DIGITS` digits: that is the form of the names
  the server gives to duplicates (``bob001``), so a numbered name always is
  one the server gave, never one a client claimed;
* no look-alikes of another script's name (Unicode TS #39): the name is in
  its plain form, NFKC (no fullwidth ``ｂｏｂ``, mathematical ``𝐛𝐨𝐛`` or
  ligatures), and its letters are of one script, or of one of the mixtures
  TS #39 calls "highly restrictive" (:data:`MIXTURES`: Latin with Han and
  kana, with Han and Bopomofo, or with Han and Hangul). ``bоb`` with a
  Cyrillic ``о`` is refused, however ``bob`` is held. A name wholly in
  another script that looks like a Latin one (a Cyrillic ``осе``) is a name
  of its own: telling those apart needs TS #39's confusables table, which
  this sample does not carry.

A refused name is answered ``WSError WSHello REASON`` (:class:`NameRefused`
holds the reason), never echoed back: it may be any bytes.
"""
from __future__ import annotations

import unicodedata

#: The most characters a name may have (a numbered name has its digits on top).
MAX_LENGTH = 32
#: Numbered duplicates end with at least this many digits (``%03d``).
NUMBER_DIGITS = 3
PUNCTUATION = frozenset("_-.")
DIGITS = frozenset("0123456789")
#: Letters and marks that print as nothing (Hangul fillers, the combining
#: grapheme joiner, Khmer inherent vowels, Mongolian and other variation selectors).
INVISIBLE = frozenset(
    [0x115F, 0x1160, 0x3164, 0xFFA0, 0x034F, 0x17B4, 0x17B5, *range(0x180B, 0x1810),
     *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])

NOT_UTF8 = "name is not UTF-8"
LENGTH = f"name must be 1 to {MAX_LENGTH} characters"
CHARACTERS = "name may hold only letters, digits, '_', '-' and '.'"
NUMBERED = f"name may not end with {NUMBER_DIGITS} digits, the form of the names the server numbers"
NOT_PLAIN = "name must be in plain form (NFKC): no fullwidth, styled or ligature letters"
MIXED_SCRIPTS = "name may not mix scripts, as Latin and Cyrillic: it would look like another"

#: The scripts one name may mix (TS #39 section 5.2, "Highly Restrictive"): how Japanese,
#: Chinese with Bopomofo and Korean are written, each with Latin letters too.
MIXTURES = (frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
            frozenset({"LATIN", "HAN", "BOPOMOFO"}),
            frozenset({"LATIN", "HAN", "HANGUL"}))
#: The scripts of the letters whose Unicode name does not start with their script's name.
_SCRIPTS_OF_NAME_WORD = {"CJK": frozenset({"HAN"}), "IDEOGRAPHIC": frozenset({"HAN"}),
                         "KATAKANA-HIRAGANA": frozenset({"HIRAGANA", "KATAKANA"})}


class NameRefused(ValueError):
    """A name the rules refuse; the message is the reason, as the client reads it."""


def check_name(raw: bytes) -> bytes:
    """The name *raw* stands for (NFC, as UTF-8), or :class:`NameRefused`."""
    if len(raw) > 16 * MAX_LENGTH:  # too long whatever it holds: not worth normalizing
        raise NameRefused(LENGTH)
    compared = as_compared(raw)
    try:
        name = compared.decode("utf-8")
    except UnicodeDecodeError:
        raise NameRefused(NOT_UTF8) from None
    if not 1 <= len(name) <= MAX_LENGTH:
        raise NameRefused(LENGTH)
    if not all(_allowed(char, first=index == 0) for index, char in enumerate(name)):
        raise NameRefused(CHARACTERS)
    if len(name) >= NUMBER_DIGITS and all(char in DIGITS for char in name[-NUMBER_DIGITS:]):
        raise NameRefused(NUMBERED)
    if unicodedata.normalize("NFKC", name) != name:
        raise NameRefused(NOT_PLAIN)
    letters = scripts(name)
    if len(letters) > 1 and not any(letters <= mixture for mixture in MIXTURES):
        raise NameRefused(MIXED_SCRIPTS)
    return name.encode("utf-8")


def scripts(name: str) -> frozenset[str]:
    """The scripts of *name*'s letters; digits, ``_ - .`` and combining marks have none.

    Python's :mod:`unicodedata` has no Script property, but a letter's Unicode name starts with
    its script's (``CYRILLIC SMALL LETTER O``; names never change once given), but for the few
    in :data:`_SCRIPTS_OF_NAME_WORD`. Where that first word is not a script's name (``MODIFIER
    LETTER APOSTROPHE``), it counts as a script of its own: such a letter mixes with nothing.
    """
    found: set[str] = set()
    for char in name:
        if unicodedata.category(char)[0] == "L":
            word = unicodedata.name(char, "").split(" ", 1)[0]
            found |= _SCRIPTS_OF_NAME_WORD.get(word, {word})
    return frozenset(found)


def as_compared(raw: bytes) -> bytes:
    """*raw* as names are compared (NFC), for ``WSWhois`` and ``WSPrivate``;
    unchanged when it is not UTF-8 (then no client holds it)."""
    try:
        return unicodedata.normalize("NFC", raw.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return raw


def numbered(name: bytes, number: int) -> bytes:
    """The name of *name*'s *number*-th duplicate: ``bob001``."""
    return b"%s%0*d" % (name, NUMBER_DIGITS, number)


def _allowed(char: str, first: bool) -> bool:
    if char in DIGITS or char in PUNCTUATION:
        return True
    if ord(char) in INVISIBLE:
        return False
    category = unicodedata.category(char)
    return category[0] == "L" or (category[0] == "M" and not first)
