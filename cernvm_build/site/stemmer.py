"""Words of the search index: the tokenizer and the Porter stemmer (M. F. Porter, 1980), shared by the
index writer (``search.py``) and, ported line for line, by the browser (``static/assets/search.js``):
a query word finds a page only if both sides cut it the same way, which ``tests/site/test_site_search.py``
checks by running the script's copy under node over every word of the shipped site.

Only lowercase ASCII words are stemmed ("configuring", "configured" and "configure" -> "configur");
numbers and other scripts are kept as they are, one-letter words included ("stratum 1").
"""

from __future__ import annotations

import re

#: letters and digits of any script; everything else separates words ("CVMFS_HTTP_PROXY" is three)
WORD = re.compile(r"[^\W_]+")
#: longer "words" (hashes, base64) are not indexed: nobody types them, and they would bloat the index
MAX_WORD = 40
_ASCII_WORD = re.compile(r"[a-z]+")
#: ``WORD`` on ASCII text, as a table: ASCII letters (lowercased) and digits are exactly the ASCII
#: characters ``\w`` takes besides "_"; every other character becomes a space, then ``str.split``
#: cuts the words. ~0.1 µs a word where the regex ``[a-z0-9]+``'s ``findall`` took ~0.17 µs
_ASCII_WORDS = str.maketrans({chr(c): chr(c).lower() if chr(c).isalnum() else " " for c in range(128)})
#: the same table for an ASCII text's bytes: ``str.translate`` looks each character up in the dict
#: (~4 ns a character); encoding, ``bytes.translate`` and decoding back cost ~40 % of that (~0.008
#: CPU-s of 1,000 pages of prose)
_ASCII_BYTES = bytes(ord(_ASCII_WORDS[c]) for c in range(128)) + bytes(range(128, 256))
#: the memo's bound (a site has a few thousand distinct words; whatever the input, it stays bounded)
MEMO_WORDS = 200_000


class _Memo(dict[str, "str | None"]):
    """word -> its stem, filled on lookup (``__missing__``): ``stems`` reads a text's words through
    ``map(memo.__getitem__, …)``, one C-level pass, with no check for words not seen yet. A word longer
    than ``MAX_WORD`` is not indexed: it is not kept, gives None and counts in ``long``, so that only a
    text that had one is filtered (a length check of every word cost ~30 ns a word). A count, not a
    flag: a lookup in another thread can only make a text be filtered that needed not be."""

    __slots__ = ("long",)

    def __init__(self) -> None:
        super().__init__()
        self.long = 0

    def __missing__(self, word: str) -> str | None:
        if len(word) > MAX_WORD:
            self.long += 1
            return None
        got = _porter(word) if len(word) > 2 and _ASCII_WORD.fullmatch(word) else word
        if len(self) > MEMO_WORDS:
            self.clear()
        self[word] = got
        return got


_cache = _Memo()

STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
    ("abli", "able"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"),
    ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"),
    ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"),
)  # fmt: skip
STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""),
    ("ness", ""),
)  # fmt: skip
STEP4 = (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
    "ate", "iti", "ous", "ive", "ize",
)  # fmt: skip


_STEPS_2_3 = ((STEP2, tuple(s for s, _ in STEP2)), (STEP3, tuple(s for s, _ in STEP3)))


def _cut(text: str) -> list[str]:
    # the words of any length, lowercased, in order
    if not text.isascii():
        text = text.lower()  # lowercased first: a few non-ASCII letters lowercase to ASCII ones
        if not text.isascii():
            return WORD.findall(text)
    return text.encode().translate(_ASCII_BYTES).decode().split()


def words(text: str) -> list[str]:
    """The indexable words of a text, lowercased, in order (not stemmed)."""
    found = _cut(text)
    if found and max(map(len, found)) > MAX_WORD:
        return [w for w in found if len(w) <= MAX_WORD]
    return found


def stems(text: str) -> list[str]:
    """The stems of the indexable words of a text, in order: ``[stem(w) for w in words(text)]``, in
    C-level passes (the index writer's cut of every word of every page)."""
    memo = _cache
    long = memo.long
    got = list(map(memo.__getitem__, _cut(text)))
    if memo.long != long:
        return [s for s in got if s is not None]
    return got  # type: ignore[return-value]


def stem(word: str) -> str:
    """The Porter stem of a lowercase word (memoised: a site has a few thousand distinct words)."""
    got = _cache[word]
    if got is None:  # longer than MAX_WORD: not indexed, so not kept
        return _porter(word) if _ASCII_WORD.fullmatch(word) else word
    return got


#: a lowercase word's letters as Porter's consonants ("c") and vowels ("v"); "y" is decided by ``_form``
_CV = str.maketrans("abcdefghijklmnopqrstuvwxyz", "vcccvcccvcccccvcccccvcccyc")


def _form(w: str) -> str:
    """The word's letters as "c"/"v": a "y" is a consonant first in the word or after a vowel, else a
    vowel. Then m (``_measure``) is the count of "vc" in it: one translation and a count in C where a
    Python call a letter (a recursive one for "y") took ~5x as long; a prefix's form is the form's prefix."""
    f = w.translate(_CV)
    if "y" not in f:
        return f
    out = []
    prev = "v"  # a first "y" is a consonant
    for c in f:
        if c == "y":
            c = "c" if prev == "v" else "v"
        out.append(c)
        prev = c
    return "".join(out)


def _measure(w: str) -> int:
    """m in [C](VC)^m[V]."""
    return _form(w).count("vc")


def _has_vowel(w: str) -> bool:
    return "v" in _form(w)


def _double(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _form(w)[-1] == "c"


def _cvc(w: str) -> bool:
    return len(w) >= 3 and w[-1] not in "wxy" and _form(w).endswith("cvc")


def _porter(w: str) -> str:
    # step 1a
    if w.endswith("sses") or w.endswith("ies"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    # step 1b
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    else:
        cut = 2 if w.endswith("ed") else 3 if w.endswith("ing") else 0
        if cut and _has_vowel(w[:-cut]):
            w = w[:-cut]
            if w.endswith(("at", "bl", "iz")):
                w += "e"
            elif _double(w) and w[-1] not in "lsz":
                w = w[:-1]
            elif _measure(w) == 1 and _cvc(w):
                w += "e"
    # step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    # steps 2 and 3: the first suffix that ends the word is the one tried
    for table, ends in _STEPS_2_3:
        if not w.endswith(ends):  # most words end with none: one C call, not one a suffix
            continue
        for suffix, repl in table:
            if w.endswith(suffix):
                if _measure(w[: -len(suffix)]) > 0:
                    w = w[: -len(suffix)] + repl
                break
    # step 4
    for suffix in STEP4 if w.endswith(STEP4) else ():
        if w.endswith(suffix):
            base = w[: -len(suffix)]
            if suffix == "ion" and not base.endswith(("s", "t")):
                continue
            if _measure(base) > 1:
                w = base
            break
    # step 5
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if _measure(w) > 1 and _double(w) and w.endswith("l"):
        w = w[:-1]
    return w
