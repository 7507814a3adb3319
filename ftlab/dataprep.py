"""Instruction data preparation: data-quality steps (deduplication, removal of personal data) and the simple
text augmentations of the EDA paper (Wei & Zou, 2019): synonym replacement, random deletion, random swap, and
typo noise. Written here because none of the stack's libraries has them (nlpaug and textattack are not in
the stack, and `datasets` only offers the map/filter they run under)."""
from __future__ import annotations

import json
import random
import re
import unicodedata
from functools import lru_cache

from ftlab.catalog import DATA_DIR
from ftlab.errors import ConfigError, DataError, check_choice, check_int, check_number, check_text
from ftlab.errors import short as _short

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# phone numbers: +country, area codes in parentheses, separators; at least 7 digits in all
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?"
                   r"\d{2,4}(?:[\s.-]\d{2,4}){1,3}(?!\w)(?!\.\d)(?!:\d)")
# what the phone pattern also matches but is not a phone number: dates (2002-08-23, also with a time after it),
# year ranges (1997-2002) and IPv4 addresses
NOT_PHONE = re.compile(r"(?:19|20)\d\d[-/.]\d\d[-/.]\d\d|(?:19|20)\d\d\s?-\s?(?:19|20)\d\d$|\d{1,3}(?:\.\d{1,3}){3}$")
URL = re.compile(r"\bhttps?://\S+")
URL_OR_PHONE = re.compile(f"(?P<url>{URL.pattern})|{PHONE.pattern}")


def normalise(text: str) -> str:
    """What two near-identical records share: case, accents, punctuation and spacing removed."""
    check_text("text", text, error=DataError, allow_empty=True)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _source_and_target(r: dict) -> str:
    return r["source"] + "\x00" + r["target"]


def dedupe(records: list[dict], key=_source_and_target) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): a record is dropped when its normalised key (source and target by default) was seen
    before. Exact duplicates and copies that differ only in case, punctuation or spacing both go."""
    _check_records(records, ("source", "target") if key is _source_and_target else ())
    if not callable(key):
        raise ConfigError("key", key, "a function of a record that returns a string (by default source and target)")
    seen, kept, dropped = set(), [], []
    for i, r in enumerate(records):
        k = key(r)
        if not isinstance(k, str):
            raise DataError(f"key(records[{i}]) is {type(k).__name__} {_short(k)}: the key function must return a "
                            "string", field="key")
        k = normalise(k)
        (dropped if k in seen else kept).append(r)
        seen.add(k)
    return kept, dropped


def _is_phone(match: str) -> bool:
    return sum(c.isdigit() for c in match) >= 7 and not NOT_PHONE.match(match.strip())


def scrub_pii(text: str) -> tuple[str, dict]:
    """Replace e-mail addresses and phone numbers with placeholders; returns (text, counts). Regular expressions
    find the common forms only: a real pipeline adds a named-entity model for names and addresses."""
    check_text("text", text, error=DataError, allow_empty=True)
    counts = {"email": 0, "phone": 0}

    def sub_email(m):
        counts["email"] += 1
        return "[EMAIL]"

    def sub_phone(m):
        if m.group("url") or not _is_phone(m.group()):  # a URL is matched first so its digits stay as they are
            return m.group()
        counts["phone"] += 1
        return "[PHONE]"

    text = EMAIL.sub(sub_email, text)
    text = URL_OR_PHONE.sub(sub_phone, text)
    return text, counts


@lru_cache(maxsize=1)
def synonyms() -> dict[str, list[str]]:
    """word -> WordNet synonyms (single words of the word's first synsets), embedded as datasets/synonyms.json
    by scripts/build_data.py for the words of the embedded datasets."""
    return json.loads((DATA_DIR / "synonyms.json").read_text(encoding="utf-8"))


WORD = re.compile(r"[A-Za-z]+")
STOP = frozenset("a an the and or but of to in on at for with by from as is are was were be been it its this that "
                 "these those i you he she we they me him her us them my your our their not no do does did have has "
                 "had will would can could should may might".split())


def synonym_replace(text: str, n: int = 1, rng: random.Random | None = None) -> str:
    """Replace up to n content words that have a WordNet synonym by one of their synonyms (case kept)."""
    text, n, rng = check_text("text", text, error=DataError, allow_empty=True), check_int("n", n, 0), _rng(rng)
    table = synonyms()
    spots = [m for m in WORD.finditer(text) if m.group().lower() not in STOP and m.group().lower() in table]
    for m in sorted(rng.sample(spots, min(n, len(spots))), key=lambda m: -m.start()):
        new = rng.choice(table[m.group().lower()])
        new = new.capitalize() if m.group()[0].isupper() else new
        text = text[:m.start()] + new + text[m.end():]
    return text


def word_deletion(text: str, p: float = 0.1, rng: random.Random | None = None) -> str:
    """Drop each word with probability p (one word always stays)."""
    text, p, rng = check_text("text", text, error=DataError, allow_empty=True), check_number("p", p, 0, 1), _rng(rng)
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or [rng.choice(words)]) if words else text


def word_swap(text: str, n: int = 1, rng: random.Random | None = None) -> str:
    """Swap two random words, n times."""
    text, n, rng = check_text("text", text, error=DataError, allow_empty=True), check_int("n", n, 0), _rng(rng)
    words = text.split()
    for _ in range(n if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


KEYBOARD = {c: n for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for i, c in enumerate(row)
            for n in [row[max(i - 1, 0)] + row[min(i + 1, len(row) - 1)]]}


def typo_noise(text: str, p: float = 0.05, rng: random.Random | None = None) -> str:
    """Each letter, with probability p, becomes a typo: a neighbouring key, a doubled or a dropped letter."""
    text, p, rng = check_text("text", text, error=DataError, allow_empty=True), check_number("p", p, 0, 1), _rng(rng)
    out = []
    for c in text:
        if c.lower() in KEYBOARD and rng.random() < p:
            kind = rng.choice(("neighbour", "double", "drop"))
            if kind == "neighbour":
                out.append(rng.choice(KEYBOARD[c.lower()]))
            elif kind == "double":
                out.append(c + c)
            continue
        out.append(c)
    return "".join(out)


AUGMENTATIONS = {"synonym replacement": synonym_replace, "word deletion": word_deletion, "word swap": word_swap,
                 "typo noise": typo_noise}


def augment(records: list[dict], how: str, seed: int = 0) -> list[dict]:
    """A copy of each record with its source changed by one augmentation (the target is kept)."""
    how = check_choice("how", how, AUGMENTATIONS)
    _check_records(records, ("source",))
    rng = random.Random(check_int("seed", seed, 0))
    return [{**r, "source": AUGMENTATIONS[how](r["source"], rng=rng)} for r in records]


def _rng(rng) -> random.Random:
    """The caller's random.Random, or a fixed one; a seed given here instead would fail deep inside."""
    if rng is None:
        return random.Random(0)
    if not isinstance(rng, random.Random):
        raise ConfigError("rng", rng, "None or a random.Random (e.g. random.Random(0))")
    return rng


def _check_records(records, keys: tuple) -> None:
    """A list of dicts whose `keys` hold strings; DataError names the record and what it has."""
    if isinstance(records, (str, dict)) or not isinstance(records, (list, tuple)):
        hint = " (one record? put it in a list)" if isinstance(records, dict) else ""
        raise DataError(f"records={_short(records)} is not allowed: a list of records (dicts), not a "
                        f"{type(records).__name__}{hint}", field="records")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"records[{i}] is {type(r).__name__} {_short(r)}: a dict with {list(keys)} is needed",
                            field="records")
        for k in keys:
            if not isinstance(r.get(k), str):
                got = "missing" if k not in r else f"{type(r[k]).__name__} {_short(r[k])}"
                raise DataError(f"records[{i}][{k!r}] is {got}: a string is needed (this record has keys "
                                f"{sorted(r)})", field="records")


