"""Metric names from the words around each quantity: plain code where an LLM would use judgement.

A name is the noun phrase that the number measures, read from the clause around it:

- before the value, up to a linking verb: "net revenue came in at $48.3M" -> "Net revenue";
  some verbs add what kind of value it is: "the outage lasted 47 minutes" -> "Outage duration",
  "error rate peaked at 12.4%" -> "Peak error rate", "onboarding takes 3 days" -> "Onboarding time";
- after an action verb, its object and the verb: "closed 86 deals" -> "Deals closed",
  "spent $1.35M on cloud infrastructure" -> "Cloud infrastructure spend", with a named subject:
  "Osaka booked ¥310 million in orders" -> "Osaka orders";
- after a count, the counted noun: "1,450 qualified leads" -> "Qualified leads", "27 trucks were turned
  back" -> "Trucks turned back"; with what was measured before it: "ridership reached 1.9 million
  trips" -> "Ridership (trips)";
- a value that only relates to the metric before it: "up 22%" -> "Revenue growth", "versus $4.0M last
  quarter" -> "Operating loss (last quarter)", "2 GW above the summer average" -> "Peak demand above
  summer average", "9% less than last month" -> "Electricity use decrease".

Then modifiers: "per day" -> "Daily …", "$0.31 per line" -> "… per line", "at the Leeds depot" ->
"… (Leeds depot)"; range ends are "… (low)" and "… (high)", the earlier value of "from X to Y" is
"… (previous)". Without any of these, the words after a preposition ("38 GB of VRAM" -> "VRAM"), what
the unit measures ("350 °C" -> "Temperature") or the heading ("Dose: 250 mg") name it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from worker.numbers import Quantity, is_currency


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- vocabulary -------------------------------------------------------------------------------

# Function words: never part of a name at its edges ("the", "of", "was", "this quarter", "die", "auf").
_FUNCTION = _words("""
    a an the its their our his her my your this that these those there here we they it he she which who where when
    was were is are be been being has have had will would could should may might can do does did
    of at to in on for by with from than as into onto over under above below about around between across within
    after before during since until till through per each every versus vs compared against via worth out
    and or but while whereas plus also then now still again already only just some approximately roughly nearly
    almost approx est estimated more less fewer least most up down instead
    last next past previous first today yesterday week weeks month months quarter quarters year years
    der die das den dem des ein eine einen einem einer es gab im in auf um bei von mit über unter rund etwa ca
    knapp fast nur gegenüber zu insgesamt und oder sowie während nach seit pro je davon wurden wurde werden
    le la les et un une de des du est était atteint
    once twice thrice daily weekly monthly yearly annually
    """)
# Verbs between a name and its value ("margin reached", "inference takes", "costs rose").
_LINKING = _words("""
    reached reaching totaled totalled totaling totalling stood stands came comes come grew grow grows rose rise
    rises fell falls dropped declined increased decreased improved worsened climbed jumped slipped sank shrank
    expanded gained averaged averaging peaked measured scored took takes take amounted amounts equals equaled
    equalled ended ending finished settled sat sits remained remains stayed stays held holds lasted lasts exceeded
    topped crossed passed surpassed rising falling hitting landed eased widened narrowed turned ran run runs
    cutting bringing taking pushing lifting lowering raising driving making leaving keeping adding reducing costing
    negative positive flat
    war waren ist sind lag lagen liegt stieg stiegen steigt sank sanken sinkt fiel fielen betrug betragen beträgt
    erreichte erreichten wuchs
    """)
# Verbs with an object: the value is what they acted on ("closed 86 deals", "spent $1.35M on ...").
_ACTION = _words("""
    manages manage managed handles handled made make makes spent spends sold sells booked generated
    generates produced produces processed served serves found finds raised returned charged collected paid earned
    posted logged completed achieved registered counted employed employs hired attracted received sent resolved
    answered picked admitted shipped delivered closed signed supplied disbursed repaired planted escalated
    lost saw sees had has have expect expects expected won
    cut reduced lowered added removed opened launched installed
    """)
# Action verbs that say nothing about what was measured ("reported CHF 1.2M in revenue" -> "Revenue").
_REPORTING = _words("reported recorded posted logged booked generated registered counted saw sees had has have found")
_PARTICIPLES = {
    "affecting": "affected",
    "serving": "served",
    "using": "used",
    "handling": "handled",
    "processing": "processed",
    "employing": "employed",
    "manages": "managed",
    "manage": "managed",
    "handles": "handled",
    "handle": "handled",
    "employs": "employed",
    "serves": "served",
    "produces": "produced",
    "makes": "made",
    "make": "made",
    "sells": "sold",
    "spend": "spent",
    "spends": "spent",
}
# Verbs that are also nouns inside names ("p99 latency hit 1.8 s" but "Costs 9M", "cost per click").
_NOUN_VERBS = _words("hit hits cost costs total totals peak peaks record handle")
_STOP = _FUNCTION | _LINKING | _ACTION
_GROWTH = _words("grew rose increased up climbed jumped gained improved expanded widened raised stieg stiegen wuchs")
_DECLINE = _words("fell dropped declined decreased down slipped sank sanken shrank lost narrowed cut reduced lowered")
_DECLINE |= _words("fiel fielen sinkt")
_COMPARATORS = _words("versus vs compared from than against instead gegenüber von")
_TIME_NOUNS = _words("quarter quartal month monat year jahr week woche period weekend day")
# Before a name, these prepositions lead into a place or a time, not into the name itself.
_PLACE_PREPOSITIONS = _words("at in im to on am bei")
# Between two words of one name: "mean time to recovery", "number of tickets", "cost per click".
_JOINERS = _words("of to per for de du d'")
_ARTICLES = _words("a an the der die das den dem des le la les un une")
_APPROXIMATORS = _words("about roughly around nearly almost approximately some over just only another")
_QUANTITY_WORDS = _words("number total count lot batch set group series couple dozen handful sample")
_GENERIC_COUNTED = _words("units unit items item pieces pcs")
_ORG_NOUNS = _words("team subsidiary branch office division department store site unit business segment arm")
_GENERIC_NAMES = _words("score rate ratio index level value amount")
_STATISTICS = _words("median mean average avg p50 p90 p95 p99 max maximum min minimum")
_KIND_WORDS = _words("target goal plan forecast limit threshold")
_CHANGE_WORDS = _words("change growth increase decrease decline drop rise")
_CAUSAL = _words("caused triggered created introduced")
_BE = _words("were was are is been got")
_PARTICLES = _words("back up out off down over")
_MONTHS_AND_DAYS = _words("""
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    monday tuesday wednesday thursday friday saturday sunday
    """)
_PERIODS = {"day": "Daily", "week": "Weekly", "month": "Monthly", "year": "Annual", "annum": "Annual"}
_ADJECTIVE_ENDINGS = ("al", "id", "ed", "ive", "ous", "ful", "ble", "ent", "ant", "ic", "ary", "ing", "less")
_UNIT_NAMES = {
    "ms": "Duration",
    "s": "Duration",
    "min": "Duration",
    "h": "Duration",
    "days": "Duration",
    "weeks": "Duration",
    "°C": "Temperature",
    "°F": "Temperature",
    "ha": "Area",
    "acres": "Area",
    "m²": "Area",
    "km²": "Area",
    "KB": "Data volume",
    "MB": "Data volume",
    "GB": "Data volume",
    "TB": "Data volume",
    "PB": "Data volume",
    "kWh": "Energy",
    "MWh": "Energy",
    "GWh": "Energy",
    "TWh": "Energy",
    "kW": "Power",
    "MW": "Power",
    "GW": "Power",
    "km/h": "Speed",
    "mph": "Speed",
    "km": "Distance",
    "mi": "Distance",
}
_TIME_UNITS = frozenset({"ms", "µs", "ns", "s", "min", "h", "days", "weeks", "months", "years"})

_WORD_RE = re.compile(r"[^\W_][\w'’&/-]*")
# A clause ends at punctuation or a conjunction; a metric's name never crosses one.
_PARENTHESES_RE = re.compile(r"\([^()]*\)")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\n")
_CLAUSE_BREAK_RE = re.compile(
    r"[;:!?()\[\]\n|]|[.,](?=\s|$)|\s[–—-]\s|\s(?:and|while|whereas|but|und|sowie|während)\s", re.IGNORECASE
)


# --- the words around a quantity ------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    quantity: Quantity
    left: list[str]  # words from the clause start (or the previous metric) up to the quantity
    right: list[str]  # words after the quantity up to the clause end (or the next metric)
    heading: list[str]  # words before a colon that opens the sentence ("Water utility: ...")
    after_heading: bool  # the value follows "Heading:" directly
    starts_sentence: bool  # left[0] is the first word of its sentence
    sentence: int  # which sentence of the text the quantity is in


def _slots(text: str, quantities: Sequence[Quantity]) -> list[_Slot]:
    slots = []
    sentence = 0
    for i, quantity in enumerate(quantities):
        start, end = quantity.span
        sentence += len(_SENTENCE_END_RE.findall(text, quantities[i - 1].span[1] if i else 0, start))
        clause_start = _last_break(text, start)
        previous_end = quantities[i - 1].span[1] if i else 0
        left_start = max(clause_start, previous_end)
        left = _WORD_RE.findall(text[left_start:start])
        starts_sentence = left_start == clause_start and _at_sentence_start(text, clause_start)
        if i and previous_end > clause_start:
            # "96,000 lines with 99.6% accuracy": "lines" belongs to the count before, not to this value.
            while left and _lower(left[0]) not in _STOP and _lower(left[0]) not in _PARTICIPLES:
                left.pop(0)
            starts_sentence = False
        next_start = quantities[i + 1].span[0] if i + 1 < len(quantities) else len(text)
        right = _WORD_RE.findall(text[end : min(_next_break(text, end), next_start)])
        heading = _heading(text[max(0, start - 300) : start])
        after_heading = (
            heading is not None and not text[clause_start:start].strip() and text[:clause_start].endswith(":")
        )
        slots.append(
            _Slot(
                quantity=quantity,
                left=left,
                right=right,
                heading=_WORD_RE.findall(_PARENTHESES_RE.sub(" ", heading)) if heading else [],
                after_heading=after_heading,
                starts_sentence=starts_sentence,
                sentence=sentence,
            )
        )
    for i, slot in enumerate(slots[:-1]):
        if slot.quantity.range_role == "low":
            # "300–350 swaps per day": the range's noun follows its upper end.
            slots[i] = replace(slot, right=slots[i + 1].right)
    return slots


def _at_sentence_start(text: str, pos: int) -> bool:
    before = text[max(0, pos - 50) : pos].rstrip()
    return (pos < 50 and not before) or before[-1:] in (".", "!", "?", ":", ";", "\n")


def _heading(before: str) -> str | None:
    r"""The text between the last colon and the sentence stop before it ("Water utility" in "Water utility: ..."):
    what re.search(r"([^.;:!?\n]*):\s*[^:]*$", before).group(1) finds, in linear time instead of quadratic."""
    colon = before.rfind(":")
    if colon < 0:
        return None
    return before[max(before.rfind(stop, 0, colon) for stop in ".;:!?\n") + 1 : colon]


def _last_break(text: str, pos: int) -> int:
    breaks = [m.end() for m in _CLAUSE_BREAK_RE.finditer(text, max(0, pos - 200), pos)]
    return breaks[-1] if breaks else max(0, pos - 200)


def _next_break(text: str, pos: int) -> int:
    found = _CLAUSE_BREAK_RE.search(text, pos, pos + 200)
    return found.start() if found else min(len(text), pos + 200)


# --- reading the words before a value --------------------------------------------------------------


@dataclass(frozen=True)
class _Left:
    name: list[str]  # the noun phrase closest before the value: "net revenue"
    link: list[str]  # the words between it and the value: "came in at"
    before: list[str]  # the words before the noun phrase: "compared with", "we expect"
    place: list[str]  # a named place the phrase was narrowed to: "Occupancy at the Harbour Tower" -> Harbour Tower


def _read_left(words: list[str], count: bool = True) -> _Left:
    end = len(words)
    while end and (_lower(words[end - 1]) in _STOP or words[end - 1].isdigit()):
        end -= 1
    if end >= 2 and end == len(words) and _lower(words[end - 1]) in _NOUN_VERBS and _lower(words[end - 2]) not in _STOP:
        end -= 1  # "p99 latency hit 1.8 s", but "Costs 9M" and "labour cost came to" keep their noun
    elif end and end == len(words) and _action_verb(words[end - 1 :], count):
        end -= 1  # "flaky tests caused 23 reruns"
    name, start = _noun_phrase_before(words, end)
    place: list[str] = []
    if name and start >= 2:
        preposition_at = start - 2 if _lower(words[start - 1]) in _ARTICLES else start - 1
        preposition = _lower(words[preposition_at])
        outer, outer_start = _noun_phrase_before(words, preposition_at)
        if outer and preposition in _PLACE_PREPOSITIONS and _lower(name[-1]) == "end":
            name, start = [*outer, words[preposition_at], *name], outer_start  # "cash at period end"
        elif outer and preposition in _PLACE_PREPOSITIONS:
            # "Rainfall in the catchment", "Umsatz im dritten Quartal", "Occupancy at the Harbour Tower"
            place = [w for w in name if w[0].isupper() and _lower(w) not in _MONTHS_AND_DAYS | _TIME_NOUNS]
            peak = _lower(name[-1]) in _TIME_NOUNS and any(_lower(w).endswith("est") for w in name)
            name, start = (["peak", *_lowered(outer[:1]), *outer[1:]] if peak else outer), outer_start
        elif outer and preposition in ("of", "for") and preposition_at == start - 2:
            name, start = [*outer, words[preposition_at], *name], outer_start  # "wait for a GP appointment"
    return _Left(name=name, link=words[end:], before=words[:start], place=place)


def _noun_phrase_before(words: list[str], end: int) -> tuple[list[str], int]:
    name: list[str] = []
    i = end
    while i and len(name) < 6:
        word, lower = words[i - 1], _lower(words[i - 1])
        if lower in _JOINERS and name and i >= 2 and _lower(words[i - 2]) not in _STOP:
            name.insert(0, word)  # "mean time to recovery"
        elif lower in _STOP or word.isdigit():
            break
        else:
            name.insert(0, word)
        i -= 1
    while name and _lower(name[0]) in _JOINERS:
        name.pop(0)
        i += 1
    return name, i


def _lower(word: str) -> str:
    return word.lower().replace("’", "'")


def _action_verb(link: list[str], count: bool = True) -> str | None:
    """The action verb right before a value ("closed 86 deals", "raised a $14M"), if there is one.
    An "-ing" form acts only on a count ("affecting 112k customers"; not "average handling 7,5 min")."""
    words = [_lower(w) for w in link]
    while words and words[-1] in _ARTICLES | _APPROXIMATORS:
        words.pop()
    if not words:
        return None
    verb = words[-1]
    is_past = _is_past(verb) and verb not in _LINKING | _GROWTH | _DECLINE | _FUNCTION
    if verb.endswith("ing") and not count:
        return None
    return verb if verb in _ACTION or verb in _PARTICIPLES or is_past else None


# --- reading the words after a value -------------------------------------------------------------


def _noun_phrase_after(words: list[str]) -> list[str]:
    """The noun phrase at the start of `words`: "qualified leads", "orders failed", "trucks were turned back"."""
    name: list[str] = []
    for i, word in enumerate(words[:5]):
        lower = _lower(word)
        if lower == "a" and name and name[-1][0].isupper() and word == "A":
            name.append(word)  # "Series A"
            continue
        if lower in _BE and name and i + 1 < len(words) and _is_participle(words[i + 1]):
            name.append(words[i + 1])  # "27 trucks were turned back"
            if i + 2 < len(words) and _lower(words[i + 2]) in _PARTICLES:
                name.append(words[i + 2])
            break
        ing = lower.endswith("ing") and len(lower) > 5 and (i + 1 < len(words) or lower in _PARTICIPLES)
        if lower in _FUNCTION or word.isdigit() or ing:
            break
        name.append(word)
    return name


def _is_past(word: str) -> bool:
    return word.endswith("ed") and not word.endswith("eed") and len(word) > 4  # "closed", not "speed"


def _is_participle(word: str) -> bool:
    lower = _lower(word)
    regular = lower.endswith("ed") and not lower.endswith("eed") and len(lower) > 3
    return regular or lower in ("made", "sold", "paid", "built", "sent", "left", "lost", "run")


def _is_adjective(words: list[str]) -> bool:
    """ "3 invalid", "7 critical": a count described, whose noun is elsewhere."""
    word = words[0] if len(words) == 1 else ""
    return word.islower() and word.endswith(_ADJECTIVE_ENDINGS) and word not in _LINKING


def _topic(words: list[str]) -> list[str]:
    """What a value is "of", "in" or "on": "litres of milk" -> milk, "$1.35M on cloud infrastructure"."""
    if len(words) < 2 or _lower(words[0]) not in ("of", "in", "on"):
        return []
    rest = words[2:] if _lower(words[1]) in _ARTICLES else words[1:]
    phrase = _noun_phrase_after(rest)
    if not phrase or _lower(phrase[0]) in _MONTHS_AND_DAYS | _TIME_NOUNS | _QUANTITY_WORDS:
        return []
    return phrase if phrase[0].islower() or _lower(words[0]) == "of" else []


def _place_after(words: list[str]) -> list[str]:
    """A named place after the value: "at the Leeds depot" -> Leeds depot, "in Bristol" -> Bristol."""
    for i, word in enumerate(words):
        if _lower(word) in ("at", "in") and i + 1 < len(words):
            rest = words[i + 1 :]
            if _lower(rest[0]) in _ARTICLES:
                rest = rest[1:]
            if rest and rest[0][0].isupper() and _lower(rest[0]) not in _MONTHS_AND_DAYS and not rest[0][1:].isdigit():
                place = [rest[0]]
                place += [w for w in rest[1:3] if w.isalpha() and _lower(w) not in _FUNCTION][:1]
                return place
    return []


# --- naming ---------------------------------------------------------------------------------------


def name_quantities(text: str, quantities: Sequence[Quantity]) -> list[str]:
    """A name for each quantity (the metrics of `text`, in order)."""
    slots = _slots(text, quantities)
    names: list[str] = []
    last_noun: list[str] = []  # the latest counted noun in the sentence, for values that leave it out ("3 invalid")
    last_action: list[str] = []
    for i, slot in enumerate(slots):
        noun = _noun_phrase_after(slot.right) if slot.quantity.unit == "" else []
        if i and slot.sentence != slots[i - 1].sentence:
            last_noun = []
        following = slots[i + 1] if i + 1 < len(slots) and slots[i + 1].sentence == slot.sentence else None
        if i and slot.sentence != slots[i - 1].sentence:
            last_action = []
        naming = _Naming(slot, names, last_noun, slots[i - 1] if i else None, following, last_action)
        names.append(naming.name() or _generic(slot.quantity.unit))
        last_noun = noun or last_noun
        last_action = naming.acted
    return names


@dataclass
class _Naming:
    slot: _Slot
    earlier: list[str]  # names given so far (the previous one may be renamed: "from X to Y")
    previous_noun: list[str]  # the counted noun of an earlier count in the sentence
    previous: _Slot | None
    following: _Slot | None
    previous_action: list[str]  # what the previous value was, when an action verb named it ("orders")
    acted: list[str] = field(default_factory=list)  # what this value is, when an action verb names it

    def name(self) -> str:
        quantity = self.slot.quantity
        if quantity.range_role == "high" and self.earlier and self.earlier[-1].endswith(" (low)"):
            return self.earlier[-1].removesuffix(" (low)") + " (high)"
        left = _read_left(self.slot.left, count=quantity.unit == "")
        name = self._base(left)
        name = self._modifiers(name, left)
        if quantity.range_role == "low":
            name += " (low)"
        return _capitalize(name)

    # The candidates, most specific first.

    def _base(self, left: _Left) -> str:
        slot, unit = self.slot, self.slot.quantity.unit
        if slot.after_heading and not slot.left and not _noun_phrase_after(slot.right):
            return " ".join(_read_left(slot.heading).name) or _generic(unit)  # "Dose: 250 mg", "Damaged parcels: 37"
        verb = _action_verb(left.link, count=unit == "")
        if verb is not None:
            acted = self._acted_on(left, verb)
            if acted:
                return acted
        counted = self._counted(left)
        if counted:
            return counted
        elided = left.name and not left.link and self.previous_action and self.previous is not None
        if elided and self.previous is not None and _same_kind(self.previous.quantity.unit, unit):
            # "Canadian subsidiary booked C$7.2M in orders and the Australian team A$3.9M": the verb is implied.
            self.acted = self.previous_action
            return " ".join([*(self._subject(left) or left.name), *self.previous_action])
        if left.name:
            return self._measured(left)
        related = self._related_to_previous(left)
        if related:
            return related
        return self._fallback()

    def _acted_on(self, left: _Left, verb: str) -> str | None:
        """ "closed 86 deals" -> "Deals closed"; "Osaka booked ¥310 million in orders" -> "Osaka orders"."""
        unit = self.slot.quantity.unit
        right = self.slot.right
        thing = _topic(right) or _noun_phrase_after(right)
        if _is_adjective(thing):
            thing = [*thing, *self._borrowed_noun()]
        if not thing and unit == "" and self.earlier:
            thing = self.previous_noun  # "closed 1,204 tickets and escalated 37"
        if not thing:
            return None
        participle = _PARTICIPLES.get(verb, verb)
        if verb in ("spent", "spend", "spends") and is_currency(unit):
            tail = ["spend"]  # "spent $1.35M on cloud infrastructure" -> "Cloud infrastructure spend"
        elif verb in ("returned",):
            tail = ["return"]
        elif verb in _REPORTING or verb in ("charged", "expect", "expects") or not _is_participle(participle):
            tail = []
        else:
            tail = [participle]
        if thing[-1].lower() == participle:
            tail = []
        if verb in _CAUSAL and left.name:
            tail += ["by", *left.name]  # "flaky tests caused 23 reruns" -> "Reruns caused by flaky tests"
        self.acted = [*thing, *tail]
        return " ".join([*self._subject(left), *thing, *tail])

    def _subject(self, left: _Left) -> list[str]:
        """A named subject: "Osaka booked", "The Mumbai branch disbursed", "Canadian subsidiary booked"."""
        words = left.name
        named = []
        for i, word in enumerate(words):
            sentence_initial = i == 0 and self.slot.starts_sentence and len(left.before) == 0
            generic_follows = i + 1 < len(words) and _lower(words[i + 1]) in _ORG_NOUNS
            if word[0].isupper() and len(word) > 1 and (not sentence_initial or generic_follows):
                named.append(word)
        return named[:2]

    def _counted(self, left: _Left) -> str | None:
        """ "1,450 qualified leads" -> "Qualified leads"; "ridership reached 1.9M trips" -> "Ridership (trips)"."""
        if self.slot.quantity.unit != "":
            return None
        noun = _noun_phrase_after(self.slot.right)
        if not noun:
            return None
        if _is_adjective(noun):
            noun = [*noun, *self._borrowed_noun()]
        measured = left.name and _lower(left.name[-1]) not in _QUANTITY_WORDS | _TIME_NOUNS
        linked = measured and (set(map(_lower, left.link)) & (_LINKING | _GROWTH | _DECLINE) or left.link == ["of"])
        if not linked:
            return " ".join(noun)
        if " ".join(noun).lower() in _GENERIC_COUNTED:
            return " ".join(left.name)  # "shrinkage of -420 units" -> "Shrinkage"
        return f"{' '.join(left.name)} ({' '.join(noun)})"

    def _measured(self, left: _Left) -> str:
        """A name before the value, with what its verb says: "lasted" -> duration, "peaked" -> peak, ..."""
        slot, unit = self.slot, self.slot.quantity.unit
        right_noun = _noun_phrase_after(slot.right)
        links = [_lower(w) for w in left.link]
        if unit == "%" and links and links[-1] in ("at", "with") and right_noun:
            return " ".join(right_noun)  # "trains ran at 97.3% punctuality" -> "Punctuality"
        name = list(left.name)
        lowered = {_lower(w) for w in name}
        if lowered <= _STATISTICS and slot.heading:
            name += _lowered(
                _read_left(slot.heading).name
            )  # "Lab turnaround: median 46 min" -> "Median lab turnaround"
        elif lowered <= _GENERIC_NAMES and slot.heading:
            name = [
                *_read_left(slot.heading).name,
                *_lowered(name),
            ]  # "NPS survey: ... score +31" -> "NPS survey score"
        if lowered <= _KIND_WORDS | _CHANGE_WORDS and self.earlier:
            name = [_base_name(self.earlier[-1]), *name]  # "median 46 minutes (target 60)"
        if links and links[-1] == "worth":
            verb = _action_verb(left.before)
            sold = [_PARTICIPLES.get(verb, verb)] if verb and verb not in _REPORTING else []
            name = ["value", "of", *_lowered(name[:1]), *name[1:], *sold]  # "sold goods worth EUR 48,310.75"
        if {"lasted", "lasts"} & set(links) and not lowered & {"duration", "time"}:
            name += ["duration"]
        elif {"takes", "took", "take"} & set(links) and unit in _TIME_UNITS and not lowered & {"duration", "time"}:
            name += ["time"]
        if {"peaked", "peaks"} & set(links) and "peak" not in lowered:
            name = ["peak", *_lowered(name[:1]), *name[1:]]
        if {"averaged", "averaging"} & set(links) and not lowered & _STATISTICS:
            name = ["average", *_lowered(name[:1]), *name[1:]]
        if {"held", "kept", "maintained", "stored"} & set(links) and unit in _UNIT_NAMES and unit not in _TIME_UNITS:
            name += [_UNIT_NAMES[unit].lower()]  # "the reactor sample was held at 350 °C" -> "… temperature"
        after = _lower(slot.right[0]) if slot.right else ""
        if after not in _FUNCTION | _LINKING | _COMPARATORS and not right_noun[1:] and _is_participle(after):
            name += slot.right[:1]  # "duties of EUR 2,415.54 paid" -> "Duties paid"
        if {"expect", "expects"} & {_lower(w) for w in left.before}:
            name += ["guidance"]  # "we expect full-year revenue of $180-195M"
        text = " ".join(name)
        # "grew by 15%", "cut build minutes by 18%" is a change; "grew to 15%" and "sank auf 6,5 %" are levels.
        verbs = set(links) | {_lower(w) for w in left.before[-1:]}
        is_change = unit in ("%", "pp") and bool(links) and links[-1] not in ("to", "auf", "at")
        if is_change and verbs & _GROWTH:
            text += " growth"
        elif is_change and verbs & _DECLINE:
            text += " decline"
        if left.place:
            text += f" ({' '.join(left.place)})"
        return text

    def _related_to_previous(self, left: _Left) -> str | None:
        """A value that says something about the metric before it: a change, a comparison, a new level."""
        if not self.earlier:
            return None
        base = _base_name(self.earlier[-1])
        links = [_lower(w) for w in left.link]
        right = [_lower(w) for w in self.slot.right]
        if links == ["of"] and self.previous is not None and self.previous.quantity.unit == self.slot.quantity.unit:
            done = [w for w in self.slot.right[:2] if _is_participle(w)]
            if done:
                self.earlier[-1] = f"{base} {done[0]}"  # "memory 412 GB of 640 GB used"
                return f"{base} total"
        if links and links[-1] in ("above", "below", "over", "under", "exceeding") and self.previous_noun:
            return " ".join([*self.previous_noun, "threshold"])  # "3 excursions above −15 °C"
        if links and links[-1] == "worth" and self.previous_noun:
            return " ".join([*self.previous_noun, "value"])  # "86 deals worth €2.4M"
        if {"lasted", "lasts", "took", "takes"} & set(links) and self.previous_noun:
            return " ".join([*self.previous_noun, "duration"])  # "3 excursions ... lasted 22 minutes"
        if links and links[-1] in ("to", "auf"):
            if self.previous is not None and self.previous.left and _lower(self.previous.left[-1]) in ("from", "von"):
                self.earlier[-1] = base + " (previous)"  # "rose from $10M to $12.5M": this is the current value
            return base  # "MRR grew 6.2% to $1.34M"
        if set(links) & _COMPARATORS:
            return f"{base} ({_when(self.slot.right) or 'previous'})"
        if set(links) & (_GROWTH | _DECLINE):
            return base + (" growth" if set(links) & _GROWTH else " decline")
        if "costing" in links:
            return base + " cost"
        if right[:1] and right[0] in ("less", "fewer", "lower", "cheaper"):
            return base + " decrease"  # "9% less than last month"
        if right[:1] and right[0] in ("more", "higher", "greater"):
            return base + " increase"
        if right[:1] and right[0] in ("above", "below", "under", "over"):
            words = [w for w in self.slot.right[:5] if _lower(w) not in _ARTICLES]
            return f"{base} {' '.join(words)}"  # "2 GW above the summer average"
        return None

    def _fallback(self) -> str:
        slot, unit = self.slot, self.slot.quantity.unit
        right = slot.right
        if unit == "%" and len(right) >= 2 and _lower(right[0]) == "of":
            phrase = _predicate(right[1:])  # "62% of electricity came from renewables"
            if phrase:
                return " ".join(phrase)
        noun = _noun_phrase_after(right)
        if noun and _is_adjective(noun):
            return " ".join([*noun, *self._borrowed_noun()])  # "1,480 builds, 6.1% failed" -> "Failed builds"
        if (
            unit == "%"
            and right
            and (_lower(right[0]) in ("would", "will", "could", "left") or _is_participle(right[0]))
        ):
            return " ".join(_predicate(right))  # "63 percent would recommend us", "4.3% left without being seen"
        if noun:
            return " ".join(noun)  # "0.8% adverse event rate"
        written = _written_unit(slot.quantity)
        done = [w for w in right[:3] if _is_participle(w)]
        if written and done:
            return f"{written} {done[0]}"  # "410 tonnes already sold" -> "Tonnes sold"
        if is_currency(unit) and slot.left and _lower(slot.left[-1]) == "at":
            return "price"  # "sold at €212 per tonne"
        topic = _topic(right)
        if topic and unit in _TIME_UNITS:
            return " ".join([*topic, "duration"])  # "6 to 8 weeks of work"
        if topic:
            return " ".join(topic)  # "38 GB of VRAM"
        if unit in _UNIT_NAMES:
            return _UNIT_NAMES[unit]
        return " ".join(_read_left(slot.heading).name) or _generic(unit)

    def _modifiers(self, name: str, left: _Left) -> str:
        slot, unit = self.slot, self.slot.quantity.unit
        right = [_lower(w) for w in slot.right]
        links = {_lower(w) for w in left.link}
        lowered = name.lower()
        # "$410K a month" -> "Monthly …", "3.6 TB of traffic per day" -> "Daily traffic"
        for i, word in enumerate(right[:5]):
            ago = i + 2 < len(right) and right[i + 2] in ("ago", "earlier", "before")
            if word in ("per", "a", "an", "each") and i + 1 < len(right) and right[i + 1] in _PERIODS and not ago:
                prefix = _PERIODS[right[i + 1]]
                if prefix.lower() not in lowered:
                    name = _prefixed(prefix, name)
                break
            if word == "per" and i + 1 < len(right) and is_currency(unit) and right[i + 1] not in lowered:
                name += " per " + slot.right[i + 1]  # "labour cost came to $0.31 per line"
                break
        if right[:2] == ["on", "average"] and "average" not in lowered:
            name = _prefixed("average", name)
        if unit == "x" and right[:1] and right[0] in ("faster", "quicker"):
            name += " speed-up"
        if left.name and (links | {_lower(w) for w in left.before[-3:]}) & _COMPARATORS:
            when = _when(slot.right)
            if when:
                name += f" ({when})"  # "compared with net income of $1.1M a year ago"
        place = _place_after(slot.right)
        if place and not left.place:
            name += f" ({' '.join(place)})"  # "shrinkage of -420 units at the Leeds depot"
        return name

    # Nouns from elsewhere in the sentence.

    def _borrowed_noun(self) -> list[str]:
        """ "7 critical and 23 high-severity vulnerabilities" -> vulnerabilities; "96 samples run, 3 invalid"."""
        if self.following is not None and self.following.quantity.unit == "":
            following = _noun_phrase_after(self.following.right)
            if following and not _is_adjective(following) and self.slot.right == self.slot.right[:1]:
                return following[-1:]
        previous = self.previous_noun
        return previous[:1] if previous else []


def _same_kind(unit: str, other: str) -> bool:
    return unit == other or (is_currency(unit) and is_currency(other))


def _predicate(words: list[str]) -> list[str]:
    """Words up to a preposition that starts a new phrase: "would recommend us as an employer" -> would recommend us."""
    phrase: list[str] = []
    for word in words[:6]:
        if phrase and _lower(word) in ("as", "to", "for", "in", "on", "at", "by", "since", "per"):
            break
        phrase.append(word)
    return phrase


def _when(words: list[str]) -> str | None:
    """A time reference after a compared value: "last quarter", "a year ago", "in Q1", "in September"."""
    lowered = [_lower(w) for w in words[:4]]
    if len(lowered) >= 2 and lowered[0] in ("last", "previous", "prior") and lowered[1] in _TIME_NOUNS:
        return " ".join(words[:2])
    if len(lowered) >= 3 and lowered[0] == "a" and lowered[1] in _TIME_NOUNS and lowered[2] in ("ago", "earlier"):
        return " ".join(words[:3])
    if len(words) >= 2 and lowered[0] == "in" and (words[1][0].isupper() or words[1].isdigit()):
        return " ".join(words[:2])
    return None


def _prefixed(prefix: str, name: str) -> str:
    """ "Daily" + "Traffic" -> "Daily traffic"; "Average" + "CPU load" -> "Average CPU load"."""
    first, _, rest = name.partition(" ")
    return " ".join(w for w in (prefix, *_lowered([first]), rest) if w)


def _lowered(words: list[str]) -> list[str]:
    """Words moved inside a name: "Lab turnaround" -> lab turnaround, but "API", "p95" and "iOS" stay."""
    return [w.lower() if w[:1].isupper() and w[1:].islower() else w for w in words]


def _written_unit(quantity: Quantity) -> str | None:
    """The unit when the report writes it as a noun: "410 tonnes" -> tonnes."""
    words = _WORD_RE.findall(quantity.raw)
    return words[-1] if words and words[-1].isalpha() and len(words[-1]) > 3 else None


def _base_name(name: str) -> str:
    """ "Revenue growth (low)" -> "Revenue": the thing a previous metric measured."""
    base = name.split(" (")[0]
    for change in (" growth", " decline", " increase", " decrease"):
        base = base.removesuffix(change)
    return base


def _generic(unit: str) -> str:
    if is_currency(unit):
        return "Amount"
    if unit in ("%", "pp"):
        return "Share"
    if unit in _TIME_UNITS:
        return "Duration"
    return "Count" if unit == "" else "Value"


def _capitalize(name: str) -> str:
    # "uptime" -> "Uptime", "on-time rate" -> "On-time rate"; "p95 API latency" and "iOS installs" keep their spelling.
    first = name.split(" ", 1)[0]
    return name[0].upper() + name[1:] if first == first.lower() and not any(c.isdigit() for c in first) else name
