"""The blameless-language check for the human-written parts of incident.yaml.

A post-mortem explains systems, not people (the facilitation guide the
project grew from: "our focus here is on understanding the systemic factors
that allowed this configuration to be deployed").  This check flags the
phrasings that turn a review into a blame session and suggests a systemic
one.  It is a heuristic: it looks for patterns, it does not understand
the text, so a finding is a prompt to reread a sentence, not a verdict.

Rules:

``possessive-blame``  "Sam's mistake", "her error"
``judgement``         careless, negligent, sloppy, lazy, incompetent, reckless, ...
``hindsight``         "should have known", "should have caught", "ought to have"
``human-error``       "human error", "operator error", "fat-fingered"
``blame-word``        "to blame", "blamed on", "dropped the ball", "screwed up"
``person-as-cause``   "caused by Sam", "because of Alex", "Sam forgot", an @handle

A capitalised word counts as a person's name only if it is not a word the
incident uses in lower case elsewhere, not a role or team named in it, and
not in :data:`COMMON_WORDS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from timeline.incident import Incident, TextField

SUGGESTIONS = {
    "possessive-blame": "describe the condition the system allowed instead of whose mistake it "
                        "was, e.g. 'the push procedure accepted an out-of-range value'",
    "judgement": "replace the judgement with the conditions: what made this step easy to get "
                 "wrong (a missing check, an unclear procedure, time pressure)?",
    "hindsight": "hindsight: say what information was available at the time, and how the "
                 "system could have surfaced it",
    "human-error": "'human error' ends the analysis too early: name the safeguard that was "
                   "missing or did not work",
    "blame-word": "describe what happened and which safeguard was missing, without assigning "
                  "blame",
    "person-as-cause": "name the role and the system condition instead of a person, e.g. "
                       "'the config author had no range check available'",
}

_FAULTY = r"(?:mistake|error|fault|oversight|screw-?up|blunder|negligence|carelessness|bad call)"
_NOT_TECHNICAL = r"(?!\s+(?:code|status|register|handler|reset|record|log|bit|address|flag))"
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("possessive-blame", re.compile(
        rf"\b(?:his|her|their|your)\s+(?:own\s+)?{_FAULTY}\b{_NOT_TECHNICAL}", re.I)),
    ("judgement", re.compile(
        r"\b(?:careless(?:ly|ness)?|negligen(?:t|tly|ce)|sloppy|sloppily|lazy|laziness|"
        r"incompeten(?:t|ce)|reckless(?:ly|ness)?|stupid(?:ly|ity)?|dumb|idiot(?:ic)?|"
        r"clueless|irresponsibl[ey])\b", re.I)),
    ("hindsight", re.compile(
        r"\b(?:should(?:\s+have|'ve)|ought\s+to\s+have)\s+(?:known|caught|noticed|seen|"
        r"checked|realized|realised|tested|asked|been\s+more\s+careful)\b", re.I)),
    ("human-error", re.compile(
        r"\b(?:human|operator|user|engineer|pilot)\s+error\b|\bfat[- ]?finger(?:ed|ing)?\b",
        re.I)),
    ("blame-word", re.compile(
        r"\b(?:to\s+blame|blamed?\s+(?:on|for)|(?:is|was)\s+at\s+fault|dropped\s+the\s+ball|"
        r"screwed\s+up|messed\s+up|didn't\s+bother|did\s+not\s+bother)\b", re.I)),
)
_POSSESSIVE_NAME = re.compile(
    rf"\b(?P<name>[A-Z][a-z]+)(?:'s|’s)\s+(?:\w+\s+)?{_FAULTY}\b{_NOT_TECHNICAL}")
_CAUSE_NAME = re.compile(
    r"\b(?:caused\s+by|because\s+of|due\s+to|the\s+fault\s+of|blame[sd]?\s+on|thanks\s+to|"
    r"responsible\s+(?:was|is))\s+(?P<name>[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\b")
_NAME_VERB = re.compile(
    r"\b(?P<name>[A-Z][a-z]+)\s+(?:forgot|broke|ignored|missed|skipped|neglected|failed\s+to|"
    r"messed|screwed|overlooked|botched|didn't|did\s+not|never)\b")
_HANDLE = re.compile(r"(?<![\w@])@(?P<name>[A-Za-z][\w.-]*)")

#: Capitalised words that start sentences or name things, never people.
COMMON_WORDS = frozenset("""
a an and as at because but by for from he her his i if in it its nobody no nothing now of
on one our she someone somebody everyone everybody that the their them then there these they
this those to we what when where which while who why with without you your after before
during once since until although however also both each either every all any many most
none several some such config configs firmware device devices unit units node nodes fleet
release build deploy deployment push pipeline service agent rack monitoring alert ci test
tests team on-call owner review system systems tool tooling process procedure check checks
validation schema channel board boards version versions sensor application applications
""".split())


@dataclass(frozen=True)
class LanguageFinding:
    field: str
    line: int | None
    rule: str
    excerpt: str
    suggestion: str

    def __str__(self) -> str:
        where = f"line {self.line}, " if self.line is not None else ""
        return (f"{where}{self.field}: {self.rule}: \"{self.excerpt}\"\n"
                f"  suggestion: {self.suggestion}")


def check_incident_language(incident: Incident) -> list[LanguageFinding]:
    """Every finding in the human-written text of an incident, in file order."""
    vocabulary = incident_vocabulary(incident)
    findings = []
    for text in incident.texts:
        findings.extend(check_text_field(text, vocabulary))
    return findings


def check_text_field(text: TextField, vocabulary: Iterable[str] = ()) -> list[LanguageFinding]:
    known = {w.lower() for w in vocabulary}
    return [LanguageFinding(text.field, text.line, rule, excerpt, SUGGESTIONS[rule])
            for rule, excerpt in check_text(text.text, known)]


def check_text(text: str, known_words: set[str] | frozenset[str] = frozenset()
               ) -> list[tuple[str, str]]:
    """(rule, matched text) for each phrase in ``text`` that assigns blame."""
    found: list[tuple[int, str, str]] = []
    for rule, pattern in _RULES:
        for m in pattern.finditer(text):
            found.append((m.start(), rule, m.group(0)))
    for rule, pattern in (("possessive-blame", _POSSESSIVE_NAME),
                          ("person-as-cause", _CAUSE_NAME), ("person-as-cause", _NAME_VERB)):
        for m in pattern.finditer(text):
            if _is_name(m.group("name"), known_words):
                found.append((m.start(), rule, m.group(0)))
    for m in _HANDLE.finditer(text):
        found.append((m.start(), "person-as-cause", m.group(0)))
    found.sort()
    seen: set[tuple[int, str]] = set()
    result = []
    for start, rule, excerpt in found:
        if (start, rule) not in seen:
            seen.add((start, rule))
            result.append((rule, " ".join(excerpt.split())))
    return result


def incident_vocabulary(incident: Incident) -> set[str]:
    """Words the incident itself uses as ordinary words, roles, teams or device names."""
    words: set[str] = set()
    texts: list[str] = [t.text for t in incident.texts] + [incident.title]
    for text in texts:
        words.update(w for w in re.findall(r"[a-z][a-z0-9-]*", text))
    names: list[str] = [r.role for r in incident.roles] + [r.team or "" for r in incident.roles]
    names += [e.device for e in incident.evidence] + [a.owner_role for a in incident.action_items]
    for name in names:
        words.update(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9-]*", name))
    return words


def _is_name(candidate: str, known_words: set[str] | frozenset[str]) -> bool:
    parts: Sequence[str] = candidate.split()
    first = parts[0].lower()
    return first not in COMMON_WORDS and first not in known_words
