"""Understanding inbound SMS in Russian (Cyrillic or Latin transliteration) and English.

``parse_sms`` turns one free-text message («нет воды, трое детей, Белоомут», «ВОДА 3 РЯЗАНЬ»,
«могу помочь: машина, 30 км», «YES 123») into a ``ParsedSms``: intent, command, aid categories,
quantity, urgency, the place mention left for the geocoder, coordinates, travel radius, language
and what is still missing. ``follow_up`` asks for the first missing item in one short SMS, and
``merge`` completes a need or offer from the reply.

Pure and dependency-free. Russian inflection is handled by hand-written stems, not a
morphological analyser: the keyword tables are data in ``notifications.keywords`` (one per
category, Russian stems, transliterations and English words side by side, with the pattern
syntax); this module holds only the logic that applies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from notifications.keywords import (
    ALONE_ONLY,
    CATEGORIES,
    CATEGORY_KEYWORDS,
    CATEGORY_NOT,
    COMMAND_WORDS,
    CRITICAL_CUES,
    ENGLISH_WORDS,
    FIRE_FLOOD_WORDS,
    FIRST_NAMES,
    FIRST_PERSON,
    HELP_CUES,
    NEED_CUES,
    NEGATIONS,
    NO_LONGER,
    NOT_PLACES,
    NOT_STREET_NAMES,
    NUMBER_WORDS,
    OFFER_CUES,
    OFFER_NOT_AFTER,
    OFFER_NOT_BEFORE,
    PEOPLE_UNITS,
    PLACE_MARKERS,
    POLITE,
    POSSESSIVE_CUES,
    POSSESSIVE_NOT,
    POSSESSIVE_REACH,
    QUANTITY_UNITS,
    QUESTION_AFTER,
    RECEIVED_CUES,
    SETTLEMENT_WORDS,
    STOPWORDS,
    STREET_GENITIVES,
    TIME_UNITS,
    TRANSLIT_WORDS,
    URGENT_CUES,
    Command,
)

__all__ = [
    "CATEGORIES",
    "CODE_ALPHABET",
    "ParsedSms",
    "category_cues",
    "fold_code",
    "follow_up",
    "intent_cues",
    "merge",
    "parse_sms",
    "polite_only",
]

Intent = Literal["need", "offer", "withdrawn", "command", "unknown"]
"""``withdrawn``: the sender says what they asked for is no longer needed or has come («вода больше
не нужна», «спасибо, воду привезли», "we don't need food anymore"); ``categories`` name what."""
Urgency = Literal["critical", "urgent", "normal"]
Language = Literal["ru", "en"]

MAX_CHARS = 2000
"""Only the first MAX_CHARS characters are read: a concatenated SMS is at most ~1,600."""

CODE_ALPHABET = "ABCEHKMPTX23456789"
CODE_LENGTH = 6
# Cyrillic letters that look like Latin ones: people type need codes on Russian keyboards.
_LOOKALIKES = str.maketrans("АВСЕНКМРТХавсенкмртх", "ABCEHKMPTXABCEHKMPTX")

_INFLECTION_LETTERS = 3

SHORT_TOKENS = 15
"""A message of at most this many tokens that names a category is a need even without a cue."""

# ----------------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class _Word:
    stem: str
    mode: Literal["exact", "inflected", "prefix", "any"]

    def matches(self, token: str) -> bool:
        if self.mode == "exact":
            return token == self.stem
        if self.mode == "any":
            return True
        if not token.startswith(self.stem):
            return False
        if self.mode == "prefix":
            return not _compound(token, len(self.stem))
        return len(token) - len(self.stem) <= _INFLECTION_LETTERS


_LINKING_VOWELS = frozenset("оеoe")
_VOWELS = frozenset("аеиоуыэюяaeiouy")
_SUFFIX_STARTS = frozenset("внйvnj")


def _compound(token: str, n: int) -> bool:
    """Whether ``token`` goes on after its first ``n`` letters (a stem) as a compound word does:
    a linking «о»/«е», then another root of five letters or more (a consonant and a vowel):
    «хлеб|о|заводская» is a street, not bread, and «пожар|о|тушение» is filed as its own keyword.
    Suffixes that start the same way («заблокир|ованного», «инфекци|онного») are not roots."""
    rest = token[n + 1 :]
    return (
        len(token) > n
        and token[n] in _LINKING_VOWELS
        and len(rest) >= 5
        and rest[0] not in _VOWELS
        and rest[0] not in _SUFFIX_STARTS
        and rest[1] in _VOWELS
    )


def _word(part: str) -> _Word:
    if part == "?":
        return _Word("", "any")
    if part.endswith("*"):
        return _Word(part[:-1], "prefix")
    if part.endswith("~"):
        return _Word(part[:-1], "inflected")
    return _Word(part, "exact")


def _compile(patterns: Iterable[str]) -> list[tuple[str, tuple[tuple[_Word, ...], ...]]]:
    """Each pattern becomes a sequence of words, each word a tuple of alternatives (``a|b~``),
    kept with the pattern as written (what ``category_cues`` reports)."""
    out = []
    for pattern in patterns:
        words = [tuple(_word(alt) for alt in part.split("|")) for part in pattern.split()]
        # A pattern with alternatives in its first word is filed once per alternative.
        for first in words[0]:
            out.append((pattern, ((first,), *words[1:])))
    return out


class _Table:
    """Patterns indexed by the first two letters of their first word, so a message is one pass."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.by_head: dict[str, list[tuple[str, tuple[tuple[_Word, ...], ...]]]] = {}
        for source, compiled in _compile(patterns):
            self.by_head.setdefault(compiled[0][0].stem[:2], []).append((source, compiled))

    def longest_at(self, tokens: Sequence[str], i: int) -> tuple[int, str]:
        """Length in tokens of the longest pattern matching at ``tokens[i]`` (0 when none does)
        and that pattern as written (the first of equally long ones)."""
        best, best_source = 0, ""
        for source, pattern in self.by_head.get(tokens[i][:2], ()):
            n = len(pattern)
            fits = n > best and i + n <= len(tokens)
            if fits and all(any(w.matches(tokens[i + j]) for w in alts) for j, alts in enumerate(pattern)):
                best, best_source = n, source
        return best, best_source

    def match_at(self, tokens: Sequence[str], i: int) -> int:
        """Length in tokens of the longest pattern matching at ``tokens[i]``, 0 when none does (or
        ``i`` is past the end)."""
        return self.longest_at(tokens, i)[0] if i < len(tokens) else 0

    def find_cues(self, tokens: Sequence[str]) -> list[tuple[int, int, str]]:
        """(start, length, pattern) of every match, scanning left to right without overlaps."""
        found, i = [], 0
        while i < len(tokens):
            n, source = self.longest_at(tokens, i)
            if n:
                found.append((i, n, source))
                i += n
            else:
                i += 1
        return found

    def find(self, tokens: Sequence[str]) -> list[tuple[int, int]]:
        """(start, length) of every match, scanning left to right without overlaps."""
        return [(i, n) for i, n, _ in self.find_cues(tokens)]


_CATEGORY_TABLES = {code: _Table(patterns) for code, patterns in CATEGORY_KEYWORDS.items()}
_CATEGORY_NOT_TABLES = {code: _Table(patterns) for code, patterns in CATEGORY_NOT.items()}
_OFFER = _Table(OFFER_CUES)
_POSSESSIVE = _Table(POSSESSIVE_CUES)
_OFFER_NOT_BEFORE = _Table(OFFER_NOT_BEFORE)
_POSSESSIVE_NOT = _Table(POSSESSIVE_NOT)
_NEED = _Table(NEED_CUES)
_HELP = _Table(HELP_CUES)
_RECEIVED = _Table(RECEIVED_CUES)
_CRITICAL = _Table(CRITICAL_CUES)
_URGENT = _Table(URGENT_CUES)
_GOODS_UNITS = _Table(QUANTITY_UNITS)
_PEOPLE_UNITS = _Table(PEOPLE_UNITS)
_TIME_UNITS = _Table(TIME_UNITS)
_NOT_PLACE = _Table(NOT_PLACES)
_ALL_KNOWN = (
    *_CATEGORY_TABLES.values(),
    _OFFER,
    _POSSESSIVE,
    _NEED,
    _HELP,
    _RECEIVED,
    _CRITICAL,
    _URGENT,
    _GOODS_UNITS,
    _PEOPLE_UNITS,
    _TIME_UNITS,
)

# ------------------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class ParsedSms:
    """What one SMS says. ``quantity`` is a count of goods units when the text names a unit
    («5 литров», «10 bottles»), else a count of people («3 человека», «нас пятеро», «семья из 4»),
    else a bare number of a short keyword message («ВОДА 3 РЯЗАНЬ»); None when there is none.
    ``place_text`` is the place as written (declined forms included) for the geocoder."""

    text: str
    intent: Intent = "unknown"
    command: Command | None = None
    argument: str | None = None
    categories: tuple[str, ...] = ()
    quantity: int | None = None
    urgency: Urgency = "normal"
    urgency_cues: tuple[str, ...] = ()
    place_text: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    language: Language = "ru"
    missing: tuple[str, ...] = ()

    @property
    def has_place(self) -> bool:
        return self.place_text is not None or (self.lat is not None and self.lon is not None)


# ----------------------------------------------------------------------------------- tokenise

_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Token:
    norm: str
    raw: str
    start: int
    end: int


def _norm(word: str) -> str:
    return word.lower().replace("ё", "е").replace("'", "").replace("’", "")


def _tokens(text: str) -> list[_Token]:
    return [_Token(_norm(m.group()), m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


# ------------------------------------------------------------------------------------ commands

_CODE = re.compile(rf"^(?:[{CODE_ALPHABET}]{{{CODE_LENGTH}}}|(?=.*\d)[{CODE_ALPHABET}]{{4,8}})$")


def fold_code(raw: str) -> str:
    """``raw`` upper-cased with Cyrillic look-alikes turned into Latin (``4кх9р2`` → ``4KX9P2``)."""
    return raw.translate(_LOOKALIKES).upper()


def _argument(raw: str) -> str | None:
    if raw.isdigit() and raw.isascii() and len(raw) <= 12:
        return raw
    folded = fold_code(raw)
    return folded if _CODE.match(folded) else None


def _command(text: str, tokens: list[_Token]) -> tuple[Command, str | None] | None:
    if not tokens or tokens[0].norm not in COMMAND_WORDS:
        return None
    command = COMMAND_WORDS[tokens[0].norm]
    if tokens[0].norm in ALONE_ONLY and len(tokens) > 1:
        return None
    if command == "stop":
        # «СТОП, больше не пишите», "Stop texting me", "STOP STOP": a message that starts with a stop
        # word is an opt-out whatever follows, unless the rest asks for help or names what is needed
        # ("STOP the fire please"). A wrong opt-out is undone by START; a missed one is not.
        rest_norms = [t.norm for t in tokens[1:]]
        if _categories(rest_norms) or _HELP.find(rest_norms):
            return None
        return command, None
    rest = tokens[1:]
    argument = None
    if rest and rest[0].norm not in POLITE:
        argument = _argument(rest[0].raw)
        if argument is None:
            return None  # «нет воды», «help me»: a sentence, not a command
        if argument.isdigit() and _counts_something(text, tokens, 1):
            return None  # «Нет 3 дня воды», "No 3 days without water": a number of days, not a task
        rest = rest[1:]
    if command == "help" and argument is not None:
        return None
    # After a code anything may follow («YES 123 on my way»); without one only thanks may.
    if argument is None and any(t.norm not in POLITE for t in rest):
        return None
    return command, argument


def _counts_something(text: str, tokens: Sequence[_Token], i: int) -> bool:
    """Whether the number ``tokens[i]`` is followed, with only a space between, by what it counts
    (days, litres, people): then it is part of a sentence, not a task number or a code."""
    if i + 1 >= len(tokens) or text[tokens[i].end : tokens[i + 1].start].strip():
        return False
    norms = [t.norm for t in tokens]
    return any(table.match_at(norms, i + 1) for table in (_TIME_UNITS, _GOODS_UNITS, _PEOPLE_UNITS))


# ------------------------------------------------------------------------------ numbers, places

_COORDS = re.compile(
    r"(?<![\w.,])(?P<ns>[NSСЮ])?\s*(?P<lat>[-+]?\d{1,2}[.,]\d{1,8})\s*°?\s*(?P<ns2>[NSСЮ](?![^\W\d_]))?"
    r"\s*[,;/\s]\s*(?P<ew>[EWВЗ])?\s*(?P<lon>[-+]?\d{1,3}[.,]\d{1,8})\s*°?\s*(?P<ew2>[EWВЗ](?![^\W\d_]))?",
    re.IGNORECASE,
)
_RADIUS = re.compile(r"(?<![\d.,])(\d{1,4})\s*(?:км|km|kilomet\w*|kilometr\w*|километр\w*)(?![^\W\d_])", re.IGNORECASE)
# A declined marker («на улице», «в переулке») is mostly "outdoors" («ночуем на улице с детьми»,
# shelter): a street only with a capitalised name or a house number («на улице ленина 5»).
_DECLINED_STREET_PATTERN = (
    r"(?<![^\W\d_])(?:улиц(?:е|у|ы|ей)|проспект(?:а|е|у|ом)|переул(?:ке|ка|ку|ком)|бульвар(?:а|е|у|ом)"
    r"|набережн(?:ой|ую)|микрорайон(?:а|е|у|ом)|площад(?:и|ью)|проезд(?:а|е|у|ом))\s+"
    r"(?:(?-i:[А-ЯЁA-Z])[\w-]*(?:\s+(?!(?:д|дом|кв|корп)(?![^\W\d_]))[^\W\d_][\w-]*)?(?:\s*,?\s*(?:д\.|дом|д)?\s*\d{1,4}[а-яa-z]?(?:/\d{1,4})?)?"
    r"|[^\W\d_][\w-]*(?:\s+(?!(?:д|дом|кв|корп)(?![^\W\d_]))[^\W\d_][\w-]*)?\s*,?\s*(?:д\.|дом|д)?\s*\d{1,4}[а-яa-z]?(?:/\d{1,4})?)"
)
_DECLINED_STREET = re.compile(_DECLINED_STREET_PATTERN, re.IGNORECASE)
# A marker, in any case («на улице Ленина», «в переулке»), ends with its dot or a space: «ул.Ленина»,
# «ул Ленина», not «улучшение», «переломы». A street's second word is never «д»/«дом» of the house
# («ул. Ленина д. 5»).
_ADDRESS = re.compile(
    r"(?<![^\W\d_])(?:ул\.?|улица|пр-т|пр\.|просп\.?|проспект|пер\.?|переулок"
    r"|б-р|бульвар|шоссе|ш\.|наб\.|набережная|мкр\.?|микрорайон|пл\.|площадь"
    r"|проезд|ulitsa|ul\.)(?:(?<=\.)\s*|\s+)[^\W\d_][\w-]*(?:\s+(?!(?:д|дом|кв|корп)(?![^\W\d_]))[^\W\d_][\w-]*)?"
    r"(?:\s*,?\s*(?:д\.|дом|д)?\s*\d{1,4}[а-яa-z]?(?:/\d{1,4})?)?"
    r"|" + _DECLINED_STREET_PATTERN + r"|\d{1,4}\s+[^\W\d_][\w-]*\s+(?:street|st\.|road|rd\.|avenue|ave\.)"
    r"|(?<![^\W\d_])[^\W\d_][\w-]*\s+(?:street|st\.|road|rd\.|avenue|ave\.)(?:\s*\d{1,4})?",
    re.IGNORECASE,
)
# «ул. Пожарная», «улица Хлебозаводская», «пр. Мира»: the street's name after a marker written as a
# word of its own (not the «пер» of «переломы»), and a second capitalised word («Карла Маркса»).
_MARKED_STREET = re.compile(
    r"(?<![^\W\d_])(?i:ул|улица|пр-т|пр|просп|проспект|пер|переулок|б-р|бульвар|шоссе|наб|набережная|мкр|микрорайон"
    r"|пл|площадь|проезд|ulitsa|ul)(?![^\W\d_])\.?\s*(?P<name>[^\W\d_][\w-]*(?:\s+[А-ЯЁA-Z][\w-]*)?)"
)


def _addresses(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """The matches of ``pattern`` (_ADDRESS, _MARKED_STREET) but a «пр.» that is «прочее»: «вода,
    еда и пр. Белоомут», «и т. пр.» ("etc.") name no avenue."""
    for m in pattern.finditer(text):
        if not (text[m.start() : m.start() + 2].lower() == "пр" and _AND_SO_ON.search(text, 0, m.start())):
            yield m


_AND_SO_ON = re.compile(r"(?<![^\W\d_])и(?:\s*т\.)?\s*$", re.IGNORECASE)


# «Садовая 12», «Ленина 5а», «д. 7», «дом 14», «Дом 14»: a house number after a capitalised street name
# (in a text that uses both cases) or after «д.» or «дом» in any case (not «Д.»: «Иванов Д. 5» is an
# initial); never a quantity.
_HOUSE = re.compile(
    r"(?<![^\W\d_])(?!(?i:дом)\s)(?P<street>[А-ЯЁA-Z][а-яёa-z]+(?:-[А-ЯЁа-яёA-Za-z]+)?)\s+(?P<n>\d{1,4}[а-яa-z]?(?:/\d{1,4})?)(?![\w])"
    r"|(?<![^\W\d_])(?:д\.|(?i:дом))\s*\d{1,4}[а-яa-z]?(?:/\d{1,4})?(?![\w])"
)


# A house number marked as one («д. 12», «дом 5»), not «Домодедовская 12».
_HOUSE_WORD = re.compile(r"д\.|(?i:дом)(?![^\W\d_])")


def _both_cases(text: str) -> bool:
    """Whether the writer used both cases: only then do capitals tell names from words."""
    letters = [c for c in text if c.isalpha()]
    return any(c.isupper() for c in letters) and any(c.islower() for c in letters)


# How street names end («Садовая», «Полевой», «Горького», «Ленина», «Кирова»), unlike most
# settlements' names («Рязань», «Тула», «Москва», «Коломна»).
_STREET_ENDINGS_RU = ("ая", "яя", "ой", "ей", "ий", "ый", "ого", "его", "ина", "ова", "ева")
_STREET_ENDINGS = (*_STREET_ENDINGS_RU, "aya", "ina", "ova", "eva", "ogo")


# How a street's own name ends, more surely than _STREET_ENDINGS («Садовая», «Лесной», «Кирова»,
# «Гагарина», «Горького», «Октябрьской»), for a name in a sentence of its own with no marker.
_OWN_STREET_ENDINGS = (*_STREET_ENDINGS, "ов", "ев", "ына", "ской", "ского", "ov", "ev", "skogo")


def _street_like(norm: str) -> bool:
    """Whether a word alone reads as a street's name: by its ending, or one of the commonest
    genitive names («Мира», «Победы»); not a word that counts or says which floor («Итого»,
    «Этаж», «Квартира», "Age", "Size")."""
    if norm in NOT_STREET_NAMES:
        return False
    return norm in STREET_GENITIVES or norm.endswith(_OWN_STREET_ENDINGS)


def _house_numbers(text: str, toks: Sequence[_Token], norms: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of the house numbers with what names their street («Садовая 12», «д. 7»)."""
    cased = _both_cases(text)
    known = _known_tokens(norms)
    starts = {t.start: i for i, t in enumerate(toks)}
    names = _capitalised_names(text, toks, known)
    spans = []
    for m in _HOUSE.finditer(text):
        if m.group("street") is not None:
            i = starts.get(m.start())
            # «Вода 3», «Нужно 5»: a keyword with a number is what and how much; a first word may be either.
            # «Хлебозаводская 3»: a long street name built on a keyword is still a street.
            street_named = i is not None and len(toks[i].norm) >= 10 and toks[i].norm.endswith(_STREET_ENDINGS_RU[:6])
            if not cased or i is None or i == 0 or (i in known and not street_named):
                continue
            if _counts_something(text, toks, i + 1) or (i + 2 < len(toks) and _GOODS_UNITS.match_at(norms, i + 2)):
                continue  # «Рязань 3 человека»
            after_place = (
                i > 0 and toks[i - 1].raw[0].isupper() and text[toks[i - 1].end : toks[i].start].strip() == ","
            )
            # «Мира 5, Рязань», «Рязань, Карла Маркса 7»: with another name beside it the word
            # before the number is a street, the other the settlement.
            others = [j for j in names if j not in (i, i - 1)]
            # «Нужна вода. Мира 5»: a street's name and a number that end the message in a sentence
            # of their own, after the one that says what is needed, are where (ул. Мира), not how
            # much; «Нужна вода. Рязань 5», «Этаж 5», "Age 5" are not.
            own_sentence = text[toks[i - 1].end : toks[i].start].strip()[-1:] in (".", "!", "?")
            last = not text[m.end() :].strip(" .!?\t\r\n")
            if own_sentence and last and _street_like(toks[i].norm):
                spans.append(m.span())
                continue
            street_end = toks[i].norm.endswith(_STREET_ENDINGS) and toks[i].norm not in NOT_STREET_NAMES
            if m.group("n").isdigit() and not after_place and not others and not street_end:
                continue  # «Вода Рязань 5»: a settlement and how much; «Садовая 12», «Рязань, Ленина 5»: a house
            # «Карла Маркса 7»: a street of two names, when the settlement is named apart.
            if i - 1 in names and text[toks[i - 1].end : toks[i].start].strip() == "" and others:
                spans.append((toks[i - 1].start, m.end()))
                continue
        spans.append(m.span())
    return spans


def _street_words(
    text: str, toks: Sequence[_Token], norms: Sequence[str], houses: Sequence[tuple[int, int]]
) -> set[int]:
    """Indices of the words that name a street: before a house number («Хлебозаводская 3»), or
    after a street marker when capitalised («ул. Пожарная», in a text that uses both cases) or
    followed by a house number («ул. пожарная 5»). Never «дом» of «дом 5», nor what says what
    happened: «площадь пожар», «Улица горит», «шоссе отрезаны» are a fire and a road cut off."""
    cased = _both_cases(text)
    # «на улице Ленина 5»: with its house number the marker too is the address's, not «на улице»
    # (outdoors, shelter); «остались на улице Рязань» is still outdoors in Рязань.
    spans = [*houses, *(m.span() for m in _DECLINED_STREET.finditer(text) if any(c.isdigit() for c in m.group()))]
    for m in _addresses(_MARKED_STREET, text):
        housed = re.match(r"\s*,?\s*(?:д\.|дом|д)?\s*\d{1,4}(?![\d.,]?\d)", text[m.end("name") :], re.IGNORECASE)
        n = next((i for i, t in enumerate(toks) if t.start >= m.end("name")), None)
        if housed and n is not None and toks[n].norm.isdigit() and _counts_something(text, toks, n):
            housed = None  # «шоссе пожар 3 дня»: how long, not a house
        if (cased and m.group("name")[0].isupper()) or housed:
            spans.append(m.span("name"))
    found = set()
    for i, t in enumerate(toks):
        if t.norm.isdigit() or t.norm in ("д", "дом") or not any(a <= t.start < b for a, b in spans):
            continue
        if _FIRE_FLOOD.match_at(norms, i) or (t.norm.endswith(_CUE_VERB_ENDINGS) and _cue_at(norms, i)):
            continue  # «ул. Горит 5» in capitals: still a fire
        found.add(i)
    return found


# How the verbs and short participles among the cue words end («горит», «мерзнем», «отрезаны»,
# «застрял», «вывезти»): no street is named so.
_CUE_VERB_ENDINGS = (
    "ть",
    "ти",
    "чь",
    "ит",
    "ят",
    "ет",
    "ут",
    "ют",
    "ем",
    "им",
    "ал",
    "ел",
    "ла",
    "ли",
    "ло",
    "ны",
    "ся",
    "сь",
)
_FIRE_FLOOD = _Table(FIRE_FLOOD_WORDS)


def _cue_at(norms: Sequence[str], i: int) -> bool:
    """Whether a category or urgency cue starts at ``norms[i]``."""
    return any(t.match_at(norms, i) for t in (*_CATEGORY_TABLES.values(), _CRITICAL, _URGENT))


def _capitalised_names(text: str, toks: Sequence[_Token], known: set[int]) -> set[int]:
    """Indices of the capitalised words that may name a place or a street: not keywords, and not
    a capital that only starts a sentence (unless a comma follows it: «Рязань, …»)."""
    found = set()
    for i, t in enumerate(toks):
        if i in known or len(t.norm) < 3 or not t.raw[0].isupper() or not t.raw[0].isalpha():
            continue
        sentence_start = i == 0 or text[toks[i - 1].end : t.start].strip()[-1:] in (".", "!", "?")
        if sentence_start and text[t.end : t.end + 1] != ",":
            continue
        found.add(i)
    return found


_PHONE = re.compile(r"\+?\d[\d\s()-]{5,}\d")
_NUMBER = re.compile(r"\d{1,6}")


# Yandex Maps links give the point as ``pt=`` / ``ll=`` longitude first («…?pt=39.74,54.62»).
_LON_LAT_PARAM = re.compile(
    r"[?&](?:pt|ll)=(?P<lon>[-+]?\d{1,3}\.\d{1,8})(?:,|%2C)(?P<lat>[-+]?\d{1,2}\.\d{1,8})", re.I
)


def _coordinates(text: str) -> tuple[float, float, tuple[int, int]] | None:
    for m in _LON_LAT_PARAM.finditer(text):
        lat, lon = float(m.group("lat")), float(m.group("lon"))
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return lat, lon, m.span()
    for m in _COORDS.finditer(text):
        try:
            lat = float(m.group("lat").replace(",", "."))
            lon = float(m.group("lon").replace(",", "."))
        except ValueError:  # pragma: no cover - the pattern only lets numbers through
            continue
        ns = (m.group("ns") or m.group("ns2") or "").upper()
        ew = (m.group("ew") or m.group("ew2") or "").upper()
        if ns in ("S", "Ю"):
            lat = -abs(lat)
        if ew in ("W", "З"):
            lon = -abs(lon)
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return lat, lon, m.span()
    return None


def _inside(start: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(a <= start < b for a, b in spans)


def _known_tokens(tokens: Sequence[str]) -> set[int]:
    """Indices of the tokens that are keywords, cues, units, number words, commands or stop words."""
    known = {i for i, t in enumerate(tokens) if t in STOPWORDS or t in COMMAND_WORDS or t in NUMBER_WORDS}
    for table in _ALL_KNOWN:
        for i, n in table.find(tokens):
            known.update(range(i, i + n))
    return known


_VERB_ENDINGS = ("ть", "ти", "чь", "те", "ся", "сь", "ing", "ed")


# A street's name and a lowercase word after it («ул. Ленина прорвало трубу», «ул. Садовой нет воды»).
_LOWERCASE_AFTER = re.compile(r"(?P<keep>.*?[^\W\d_][\w-]*)\s+(?P<word>[а-яёa-z][\w-]*)", re.DOTALL)
# Words that name no street, besides the parser's keywords: where («возле школы») and what happened.
_NOT_A_NAME_AFTER_A_STREET = frozenset(
    {
        *("возле", "около", "рядом", "напротив", "между", "перед"),
        *("прорвало", "затопило", "затоплен", "затоплена", "затоплено", "залило", "смыло", "отключили"),
        *("сгорел", "сгорела", "сгорело", "сгорели", "горят", "обрушился", "обрушилась", "рухнул", "рухнула"),
    }
)


def _without_a_lowercase_word_after(address: tuple[str, tuple[int, int]]) -> tuple[str, tuple[int, int]]:
    """A street address without the lowercase word its match took after the name, in a text written
    in both cases, when that word is one of the parser's keywords or names no street (where, what
    happened): «ул. Ленина горит» → «ул. Ленина», «ул. Садовой нет воды» → «ул. Садовой». Any other
    word stays: writers lowercase names too («ул. Красная горка», «ул. Маршала жукова»), and a
    settlement may follow («ул. Ленина тула»). Kept also when the rest would name no street."""
    written, (start, _) = address
    m = _LOWERCASE_AFTER.fullmatch(written)
    if m is None or not _ADDRESS.fullmatch(m.group("keep")):
        return address
    word = _norm(m.group("word"))
    if word not in _NOT_A_NAME_AFTER_A_STREET and not _known_tokens([word]):
        return address
    keep = m.group("keep")
    return keep, (start, start + len(keep))


def _place(
    text: str, toks: list[_Token], norms: list[str], taken: list[tuple[int, int]], houses: Sequence[tuple[int, int]]
) -> str | None:
    """The settlement and/or street address as written, or None."""
    address = None
    cased = _both_cases(text)
    for m in _addresses(_ADDRESS, text):
        if not _inside(m.start(), taken):
            address = (m.group().strip(" ,"), m.span())
            if cased:
                address = _without_a_lowercase_word_after(address)
            break
    if address is None:
        for a, b in houses:
            if not _inside(a, taken):
                address = (text[a:b], (a, b))
                break
    elif not any(c.isdigit() for c in address[0]):
        # «дом 12 ул. Ленина», «дом 5 по ул. Ленина», «д. 12 на ул. Ленина»: the house number written
        # before its street. Only a number marked as a house: «Садовая 12 на ул. Ленина» names a
        # street of its own (and «на ул. …» says where something happened).
        start = address[1][0]
        for a, b in houses:
            joined = text[b:start].strip(" ,").lower()
            if b <= start and joined in ("", "по", "на") and _HOUSE_WORD.match(text, a) and not _inside(a, taken):
                address = (f"{address[0]}, {text[a:b]}", (a, address[1][1]))
                break
    short = len(toks) <= 6
    blocked = [*taken, *([address[1]] if address else [])]
    known = _known_tokens(norms)

    def candidate(i: int) -> bool:
        t = toks[i]
        if _inside(t.start, blocked) or not t.raw[0].isalpha() or len(t.norm) < 3 or i in known:
            return False
        if t.norm in NOT_STREET_NAMES:
            return False  # «Нужны памперсы. Размер 5», «Примерно 5»: how many, not where
        return t.raw[0].isupper() if cased else True

    def run_from(i: int) -> str:
        j = i
        while j + 1 < len(toks) and candidate(j + 1) and text[toks[j].end : toks[j + 1].start].strip() == "":
            j += 1
        start = toks[i].start
        # «деревня Старая», «в поселке Новом»: an adjective alone is no settlement to the geocoder
        # unless said to be one, so the word that says so stays with it.
        if i == j and i > 0 and norms[i - 1] in SETTLEMENT_WORDS and toks[i].norm.endswith(_ADJECTIVE_ENDINGS):
            gap = text[toks[i - 1].end : toks[i].start]
            if gap.strip(" .") == "" and (len(norms[i - 1]) > 1 or "." in gap):
                start = toks[i - 1].start
        return text[start : toks[j].end]

    settlement = None
    for i in range(len(toks) - 1):
        marker = norms[i]
        if marker not in PLACE_MARKERS or not candidate(i + 1):
            continue
        if not cased and _NOT_PLACE.match_at(norms, i + 1):
            continue
        settlement = run_from(i + 1)
        break
    if settlement is None:
        # A word that only starts the sentence is the place only when nothing else is: «Маме нужна
        # скорая, Рязань» is in Рязань; and never right before «нужен», «надо»: «Сыну нужен
        # инсулин» says who needs it.
        fallback = None
        for i, t in enumerate(toks):
            if not candidate(i) or _NOT_PLACE.match_at(norms, i):
                continue
            sentence_start = i == 0 or text[toks[i - 1].end : t.start].strip()[-1:] in (".", "!", "?")
            after = text[t.end : t.end + 2].lstrip(" ")[:1]
            if t.norm in FIRST_NAMES and after == ",":
                continue  # «Ольга, нужна вода»: the person spoken to, not the village Ольга
            before_address = address is not None and text[t.end : address[1][0]].strip(" ,") == ""
            if not cased and (not short or t.norm.endswith(_VERB_ENDINGS)):
                continue  # «нужно узнать»: without capitals a lone verb is not a place
            if sentence_start and not before_address and after not in ",:;-—\n":
                who = after.isalpha() and _NEED.match_at(norms, i + 1)  # «Сыну нужен…»
                if (not cased or short) and fallback is None and not who:
                    fallback = i
                continue  # a capital that only starts a sentence
            settlement = run_from(i)
            break
        if settlement is None and fallback is not None:
            settlement = run_from(fallback)
    if address and settlement and settlement not in address[0]:
        return f"{settlement}, {address[0]}"
    if address:
        return address[0]
    return settlement


_ADJECTIVE_ENDINGS = ("ая", "яя", "ый", "ий", "ой", "ое", "ее", "ые", "ие", "ом", "ем", "ую", "ого", "его", "ых", "их")
_SETTLEMENT_ENDINGS = ("ово", "ево", "ино", "ыно", "ское", "цкое")


def _settlement_names(text: str, toks: Sequence[_Token]) -> set[int]:
    """Indices of the words that read as settlement names by their Russian ending («-ово», «-ино»,
    «-ское»), capitalised in a text that uses both cases."""
    if not _both_cases(text):
        return set()
    return {
        i
        for i, t in enumerate(toks)
        if t.raw[0].isupper() and len(t.norm) >= 6 and t.norm.endswith(_SETTLEMENT_ENDINGS) and t.raw[1:].islower()
    }


def _quantity(toks: list[_Token], norms: list[str], taken: list[tuple[int, int]]) -> int | None:
    goods: int | None = None
    people: int | None = None
    bare: int | None = None
    for i, t in enumerate(toks):
        if _inside(t.start, taken):
            continue
        if t.norm.isdigit() and t.norm.isascii() and len(t.norm) <= 6:
            value = int(t.norm)
        elif t.norm in NUMBER_WORDS:
            value = NUMBER_WORDS[t.norm]
        else:
            continue
        nxt = i + 1 < len(toks)
        if nxt and _TIME_UNITS.match_at(norms, i + 1):
            continue  # «3 дня без воды»: how long, not how much
        if nxt and goods is None and _GOODS_UNITS.match_at(norms, i + 1):
            goods = value
        elif nxt and people is None and _PEOPLE_UNITS.match_at(norms, i + 1):
            people = value
        elif people is None and i > 0 and norms[i - 1] in ("нас", "из", "nas", "of") and value <= 100:
            people = value  # «нас 5», «семья из 4», «family of 4»
        elif people is None and t.norm in NUMBER_WORDS and t.norm.endswith(("ое", "еро", "oe")):
            people = value  # «трое», «пятеро» name people
        elif bare is None and t.norm.isdigit() and len(toks) <= 6 and 0 < value < 10000:
            bare = value
    for found in (goods, people, bare):
        if found:
            return found
    return None


# ------------------------------------------------------------------------------------ language


def _language(text: str, norms: list[str]) -> Language:
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    if cyrillic and cyrillic >= latin / 3:
        return "ru"
    translit = sum(t in TRANSLIT_WORDS for t in norms)
    english = sum(t in ENGLISH_WORDS for t in norms)
    return "ru" if translit > english else "en"


# -------------------------------------------------------------------------------------- parse


def _cues(table: _Table, toks: list[_Token], norms: list[str], seen: set[int]) -> list[str]:
    """The cue words as written (lower case); tokens in ``seen`` (already a cue) are skipped."""
    found = []
    for i, n in table.find(norms):
        if (i > 0 and norms[i - 1] in ("не", "ne", "not", "no")) or seen & set(range(i, i + n)):
            continue  # «не срочно», «not urgent»
        seen.update(range(i, i + n))
        found.append(" ".join(t.raw.lower() for t in toks[i : i + n]))
    return found


def _missing(intent: Intent, categories: tuple[str, ...], has_place: bool) -> tuple[str, ...]:
    if intent not in ("need", "offer"):
        return ()
    return (*(() if has_place else ("place",)), *(() if categories else ("category",)))


def parse_sms(text: str, *, commands: bool = True) -> ParsedSms:
    """Read one inbound SMS. Never raises: what cannot be read comes back as intent ``unknown``.

    ``commands`` False reads the text as a sentence even when it starts like a command: «Нет
    сахара, детям нечего есть» folds «сахара» into the code-like CAXAPA; when no such code is
    the sender's, the caller reads the message again this way.
    """
    try:
        return _parse(text, commands)
    except Exception:  # pragma: no cover - a last guard: an SMS must never crash the webhook
        return ParsedSms(text=str(text)[:MAX_CHARS], language="ru")


def _parse(text: str, commands: bool = True) -> ParsedSms:
    text = (text if isinstance(text, str) else str(text))[:MAX_CHARS]
    toks = _tokens(text)
    norms = [t.norm for t in toks]
    language = _language(text, norms)

    command = _command(text, toks) if commands else None
    if command is not None:
        # The command word alone tells the language: «DA» is Russian, «STOP» English.
        word = toks[0].norm
        language = "en" if word.isascii() and word not in TRANSLIT_WORDS | {"pomoshch", "pomosch"} else "ru"
        return ParsedSms(text=text, intent="command", command=command[0], argument=command[1], language=language)

    taken: list[tuple[int, int]] = []
    lat = lon = None
    coords = _coordinates(text)
    if coords is not None:
        lat, lon, span = coords
        taken.append(span)
    radius_km = None
    for m in _RADIUS.finditer(text):
        if not _inside(m.start(), taken):
            radius_km = float(m.group(1))
            taken.append(m.span())
            break
    taken += [m.span() for m in _PHONE.finditer(text) if sum(c.isdigit() for c in m.group()) >= 7]

    norms, houses, said = _where_and_what(text, toks)
    categories = _categories(said)

    seen: set[int] = set()
    critical = _cues(_CRITICAL, toks, norms, seen)
    urgent = _cues(_URGENT, toks, norms, seen)
    for m in re.finditer(r"(?<![^\W\d_])(help|помогите|pomogite)\s*!", text, re.IGNORECASE):
        urgent.append(m.group(1).lower() + "!")
    urgency: Urgency = "critical" if critical else "urgent" if urgent else "normal"
    cues = tuple(dict.fromkeys([*critical, *urgent]))

    intent = _intent(said, categories)
    place_text = _place(text, toks, norms, taken, houses)
    address_spans = [m.span() for m in _addresses(_ADDRESS, text)] + houses
    quantity = _quantity(toks, norms, [*taken, *address_spans])
    has_place = place_text is not None or lat is not None
    return ParsedSms(
        text=text,
        intent=intent,
        categories=categories,
        quantity=quantity,
        urgency=urgency,
        urgency_cues=cues,
        place_text=place_text,
        lat=lat,
        lon=lon,
        radius_km=radius_km,
        language=language,
        missing=_missing(intent, categories, has_place),
    )


def _where_and_what(text: str, toks: Sequence[_Token]) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """The words with settlement names blanked, the house numbers' spans, and the words that may
    say what is needed (street names blanked too)."""
    # «Приютово», «Тушино», «Хлебниково»: a capitalised settlement name built on a keyword's stem
    # names the place, not what is needed.
    names = _settlement_names(text, toks)
    norms = ["" if i in names else t.norm for i, t in enumerate(toks)]
    houses = _house_numbers(text, toks, norms)
    # «нужна вода, ул. Пожарная 4», «Хлебозаводская 3»: a street's name says where, not what.
    streets = _street_words(text, toks, norms, houses)
    return norms, houses, ["" if i in streets else n for i, n in enumerate(norms)]


def _category_cues(norms: Sequence[str]) -> dict[str, list[str]]:
    """The keyword patterns (as written in the tables) that name each category found, in the
    order of the category codes; a match inside a CATEGORY_NOT phrase does not count."""
    found: dict[str, list[str]] = {}
    for code, table in _CATEGORY_TABLES.items():
        excluded: set[int] = set()
        if code in _CATEGORY_NOT_TABLES:
            for i, n in _CATEGORY_NOT_TABLES[code].find(norms):
                excluded.update(range(i, i + n))
        cues = [source for i, n, source in table.find_cues(norms) if not excluded.issuperset(range(i, i + n))]
        if cues:
            found[code] = cues
    return found


def _categories(norms: Sequence[str]) -> tuple[str, ...]:
    return tuple(_category_cues(norms))


def category_cues(text: str) -> dict[str, tuple[str, ...]]:
    """Why ``parse_sms`` names each category of ``text``: the keyword patterns that matched, as
    written in ``notifications.keywords`` (for tuning and for explaining a decision). Settlement and
    street names count as places, as there («Хлебозаводская 3» names no bread)."""
    text = str(text)[:MAX_CHARS]
    _, _, said = _where_and_what(text, _tokens(text))
    return {code: tuple(cues) for code, cues in _category_cues(said).items()}


def intent_cues(text: str) -> dict[str, tuple[str, ...]]:
    """The request and offer cue patterns found in ``text`` (``offer``, ``possessive``, ``need``,
    ``help``), before the context rules of ``parse_sms`` weigh them (for tuning)."""
    norms = [t.norm for t in _tokens(str(text)[:MAX_CHARS])]
    tables = {"offer": _OFFER, "possessive": _POSSESSIVE, "need": _NEED, "help": _HELP}
    found = {name: tuple(source for _, _, source in table.find_cues(norms)) for name, table in tables.items()}
    return {name: cues for name, cues in found.items() if cues}


def _intent(norms: list[str], categories: tuple[str, ...], *, short_form: bool = True) -> Intent:
    """need, offer, withdrawn or unknown; ``short_form`` False: a short message that only names things
    («вода», "water 3") is not read as a need (it may answer «Чем можете помочь?»)."""
    offers: list[int] = []
    offer_spans: set[int] = set()
    for i, n in _OFFER.find(norms):
        if i > 0 and norms[i - 1] in NEGATIONS:
            continue  # «не могу», "not willing to"
        if i + n < len(norms) and (
            norms[i + n] in ("not", "не", "ne", *QUESTION_AFTER) or _OFFER_NOT_BEFORE.match_at(norms, i + n)
        ):
            continue  # "I can not", «могу получить», «могу ли я», "we can find food": not an offer
        if any(w in OFFER_NOT_AFTER for w in norms[max(0, i - 2) : i]):
            continue  # «где я могу …», "so we can get food": a question or a purpose
        offers.append(i)
        offer_spans.update(range(i, i + n))
    for i, n in _POSSESSIVE.find(norms):
        if i > 0 and norms[i - 1] in NEGATIONS | {"нечего", "nechego"}:
            continue
        if QUESTION_AFTER.intersection(norms[i + n : i + n + 1]) or OFFER_NOT_AFTER.intersection(
            norms[max(0, i - 2) : i]
        ):
            continue  # «есть ли у кого генератор», «у кого есть лодка»: asking for it
        ahead = norms[i + n : i + n + POSSESSIVE_REACH]
        if any(w in NEGATIONS or w in ("been", "lost", "had", "to") for w in ahead[:2]) or _POSSESSIVE_NOT.find(ahead):
            continue
        # «у нас есть раненые», «we have sick children» report a need; things are what one offers.
        if set(_categories(ahead)) - {"medical", "evacuation"}:
            offers.append(i)
    # «больше не нужна», "no longer need": a need cue said not to hold, and a call for help beside it.
    negated = [i for i, _ in _NEED.find(norms) if i > 0 and norms[i - 1] in NO_LONGER]
    received = [i for i, _ in _RECEIVED.find(norms) if not (i > 0 and norms[i - 1] in NEGATIONS)]
    needs = [i for i, _ in _HELP.find(norms) if i not in offer_spans and not any(abs(i - j) <= 3 for j in negated)]
    if categories:
        needs += [i for i, _ in _NEED.find(norms) if i not in offer_spans and i not in negated]
    # «нет воды», «без еды», «no food»: a negation right before a category names a need.
    needs += [
        i
        for i, t in enumerate(norms)
        if t in NEGATIONS and not _NEED.match_at(norms, i + 1) and _categories(norms[i + 1 : i + 3])
    ]
    if (negated or received) and not offers and not needs:
        return "withdrawn"
    if offers and (not needs or min(offers) < min(needs)):
        return "offer"
    if needs:
        return "need"
    if short_form and categories and (len(norms) <= SHORT_TOKENS or any(t in FIRST_PERSON for t in norms)):
        return "need"  # «ВОДА 3 РЯЗАНЬ»; a long third-person text is a report, not a request
    return "unknown"


# ----------------------------------------------------------------------------- conversation

_FOLLOW_UP: dict[tuple[str, str, str], str] = {
    ("need", "place", "ru"): "Где вы? Напишите населённый пункт или адрес.",
    ("need", "category", "ru"): "Что нужно? Например: вода, еда, жильё, лекарства, эвакуация.",
    ("offer", "place", "ru"): "Где вы находитесь? Напишите населённый пункт или адрес.",
    ("offer", "category", "ru"): "Чем можете помочь? Например: вода, еда, машина, жильё.",
    ("need", "place", "en"): "Where are you? Reply with your town or street address.",
    ("need", "category", "en"): "What do you need? E.g. water, food, shelter, medicine, evacuation.",
    ("offer", "place", "en"): "Where are you based? Reply with your town or street address.",
    ("offer", "category", "en"): "How can you help? E.g. water, food, car, shelter.",
}


def follow_up(parsed: ParsedSms, language: str | None = None) -> str | None:
    """One short question for the first missing essential item (place first: a helper can bring
    «something» to a known place, never anything to an unknown one); None when nothing is missing.
    ``language`` (``ru``/``en``) defaults to the message's own."""
    if parsed.intent not in ("need", "offer") or not parsed.missing:
        return None
    lang = language if language in ("ru", "en") else parsed.language
    return _FOLLOW_UP[(parsed.intent, parsed.missing[0], lang)]


URGENCY_RANK = {"normal": 0, "urgent": 1, "critical": 2}
"""How pressing each urgency is (higher: more): to take the more pressing of two."""


def answers(previous: ParsedSms, reply: ParsedSms, asked: str = "") -> bool:
    """Whether ``reply`` may complete the conversation of ``previous`` (``asked``: what its follow-up
    question asked for, "category" or "place"): not when it is a request of the other kind (an SOS
    from a phone that was registering as a helper is a need, not the place of the offer). A helper
    asked «Чем можете помочь?» who answers only with things («вода, машина») answers the question:
    alone that would read as a need, but nothing in it asks for anything."""
    if reply.intent == "withdrawn":
        return False  # «вода больше не нужна»: the request is called off, not completed
    if reply.intent == "unknown" and polite_only(reply.text):
        return False  # «спасибо», «ок, спасибо»: thanks, not the place nor what is needed
    kinds = ("need", "offer")
    if previous.intent in kinds and reply.intent in kinds and reply.intent != previous.intent:
        if asked == "place" and previous.intent == "need" and reply.has_place:
            # «Рязань, могу сам забрать», "Ryazan, I can pick it up myself" to «Где вы?»: the place
            # asked for, with how they will get it; an offer only when it offers something new.
            return set(reply.categories) <= set(previous.categories)
        if asked in ("category", "place") and previous.intent == "offer" and reply.intent == "need":
            # «вода, машина» to «Чем можете помочь?», «машина, Рязань» to «Где вы находитесь?»
            norms = [t.norm for t in _tokens(reply.text)]
            return _intent(norms, reply.categories, short_form=False) != "need"
        return False
    return True


def polite_only(text: str) -> bool:
    """Whether ``text`` is only thanks and greetings («спасибо», "thanks!", «ок, спасибо большое»)."""
    norms = [t.norm for t in _tokens(str(text)[:MAX_CHARS])]
    return bool(norms) and all(t in POLITE or t in _THANKS for t in norms)


_THANKS = frozenset({"большое", "огромное", "ок", "ok", "хорошо", "понял", "поняла", "much", "so", "very", "a", "lot"})


def merge(previous: ParsedSms, reply: ParsedSms) -> ParsedSms:
    """``previous`` completed by the ``reply`` to a follow-up question: the reply only fills what
    was missing (categories, place, coordinates, quantity, radius) and never overwrites what was
    given; urgency takes the higher of the two. A reply of the same intent adds its categories
    («нужна вода» — «Где?» — «нужна еда, Белоомут»: water and food). When the place was missing, a
    reply that asks for nothing is read whole as the place («Белоомут», «за мостом у старой школы»).
    A reply of the other intent is not an answer (see ``answers``)."""
    if reply.intent == "command":
        return previous
    categories = previous.categories or reply.categories
    if reply.intent == previous.intent:
        categories = tuple(dict.fromkeys((*previous.categories, *reply.categories)))
    place_text, lat, lon = previous.place_text, previous.lat, previous.lon
    if not previous.has_place:
        place_text, lat, lon = reply.place_text, reply.lat, reply.lon
        bare = reply.text.strip(" \t\r\n.,!?;:")
        # The answer to «Где вы?» that asks for nothing is the place, all of it; one that says more
        # («Рязань, могу сам забрать») is the place it names.
        said_more = reply.intent in ("need", "offer") and place_text is not None
        if (
            lat is None
            and not reply.categories
            and not said_more
            and 0 < len(bare) <= 80
            and any(c.isalpha() for c in bare)
        ):
            place_text = bare
    intent: Intent = previous.intent
    if intent not in ("need", "offer"):
        intent = reply.intent if reply.intent in ("need", "offer") else "need" if categories else previous.intent
    urgency = max(previous.urgency, reply.urgency, key=URGENCY_RANK.__getitem__)
    has_place = place_text is not None or lat is not None
    return replace(
        previous,
        text=f"{previous.text}\n{reply.text}",
        intent=intent,
        categories=categories,
        quantity=previous.quantity if previous.quantity is not None else reply.quantity,
        urgency=urgency,
        urgency_cues=tuple(dict.fromkeys((*previous.urgency_cues, *reply.urgency_cues))),
        place_text=place_text,
        lat=lat,
        lon=lon,
        radius_km=previous.radius_km if previous.radius_km is not None else reply.radius_km,
        missing=_missing(intent, categories, has_place),
    )
