"""Reading pairs: questions whose answer the inserted passage itself states.

Most FanOutQA answers are not in the Wikipedia lead a OneGen model inserts (19 of the 251
training sub-questions hold every answer item in 48 words), so its answer examples mostly teach
answering from memory. These examples teach the other habit: a question about a passage's subject
whose answer is a span of that passage *as inserted* (cut to the same number of words). Each comes
from one high-precision pattern of Wikipedia lead sentences ("... is a 1975 film directed by
Steven Spielberg" -> "Who directed Jaws (film)?" / "Steven Spielberg"); a pattern whose span is
doubtful (a demonym, a life span that is not one) gives no pair.
:func:`unirag.onegen.datasets.reading_examples` turns the pairs into OneGen training examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from unirag.corpus import Passage
from unirag.models.decoding import cut_words

_NAME = r"[A-Z][\w.'’-]*(?: (?:(?:da|de|di|del|von|van|der|la|le|of|the|and|y|bin|al)\s)*[A-Z][\w.'’-]*)*"
_DAY = r"(?:[A-Z][a-z]+ \d{1,2}, |\d{1,2} [A-Z][a-z]+ )?"
# words that may follow a name-like answer; any other lower-case word makes it an adjective
# ("created by American toy company ...")
_AFTER = {"for", "in", "and", "as", "with", "from", "on", "at", "to", "which", "that", "who", "the", "while",
          "under", "between", "during", "after", "before", "but", "is", "was", "were", "are", "based", "about"}


@dataclass(frozen=True)
class ReadingPattern:
    """A lead-sentence pattern: its ``name``, the regex whose group 1 is the answer (``{subject}``
    stands for the title without a parenthesised qualifier), the question template (``{t}`` = the
    passage title), whether the answer is a name (cut at a sentence end, refused as an adjective),
    the corpus ``topic`` a passage must have (``None``: any), and whether groups 1 and 2 are a life
    span (birth and optional death year) to check as a person's."""

    name: str
    regex: str
    question: str
    is_name: bool = True
    topic: str | None = None
    life_span: bool = False


PATTERNS: tuple[ReadingPattern, ...] = (
    ReadingPattern("capital", r"\b[Ii]ts capital(?: city)?(?: and (?:largest|most populous) city)? is "
                   r"(?:the city of )?(" + _NAME + ")", "What is the capital of {t}?"),
    ReadingPattern("largest city", r"\b(?:[Ii]ts )?(?:largest|most populous) city(?: and capital)? is (" + _NAME + ")",
                   "What is the largest city of {t}?"),
    ReadingPattern("capital of", r"^[^.]*?\bis the capital (?:city )?(?:and (?:largest|most populous) city )?of "
                   r"(?:the )?(" + _NAME + ")", "Of which place is {t} the capital?"),
    ReadingPattern("headquarters", r"\b(?:headquartered|based) in (" + _NAME + ")", "Where is {t} based?"),
    ReadingPattern("location", r"^[^.]*?\bis an? (?:[a-z]+ )?(?:city|town|village|river|mountain|lake|island|region|"
                   r"province|state|port city|capital city|municipality) (?:located )?(?:in|on) (?:the )?"
                   r"(?:[a-z]+ )*?(?:of )?(" + _NAME + ")", "Where is {t} located?"),
    ReadingPattern("atomic number", r"\batomic number (\d{1,3})\b", "What is the atomic number of {t}?",
                   is_name=False),
    ReadingPattern("nationality", r"^[^.(]*?(?:\([^()]*\)[^.(]*?)? (?:is|was) an? ([A-Z][a-z]+(?:-[A-Z][a-z]+)?) "
                   r"(?:[a-z]+ ){0,3}?(?:politician|actor|actress|singer|writer|poet|painter|composer|"
                   r"philosopher|scientist|physicist|chemist|mathematician|footballer|businessman|"
                   r"novelist|director|filmmaker|rapper|musician|lawyer|statesman|general|engineer|"
                   r"inventor|economist|astronomer|explorer|athlete|basketball player)\b",
                   "What is the nationality of {t}?", is_name=False, topic="People"),
    ReadingPattern("director", r"\bfilm directed by (" + _NAME + ")", "Who directed {t}?"),
    ReadingPattern("author", r"\b(?:novel|book|play|poem|novella|memoir) (?:written )?by (?:the )?"
                   r"(?:[a-z]+ )*?(?:author |writer |novelist |poet |playwright )?(" + _NAME + ")", "Who wrote {t}?"),
    ReadingPattern("founder", r"\b[Ff]ounded (?:in \d{4} )?by (" + _NAME + ")", "Who founded {t}?"),
    ReadingPattern("creator", r"\b(?:developed|created) by (" + _NAME + ")", "Who created {t}?"),
    ReadingPattern("founding year", r"\b(?:It|{subject}) was (?:founded|established) (?:in|on) " + _DAY
                   + r"(\d{4})\b", "In what year was {t} founded?", is_name=False),
    ReadingPattern("film year", r"\bis an? (\d{4}) (?:[A-Z][\w-]* )*(?:[a-z-]+ ){0,4}film\b",
                   "In what year was {t} released?", is_name=False),
    ReadingPattern("birth year", r"^[^()]{1,60}?\((?:[^()]*?; )?(?:born |b\. )?" + _DAY + r"(\d{3,4})"
                   r"(?:\)|\s*[–-]\s*" + _DAY + r"(\d{3,4})\))", "In what year was {t} born?", is_name=False,
                   topic="People", life_span=True),
)


def _name_span(text: str, start: int, end: int) -> str | None:
    """The name at ``text[start:end]`` cut at a sentence end, or ``None`` when it reads as an
    adjective (a lower-case word other than a linking word follows it) or is a single letter."""
    span = re.split(r"(?<=[a-z]{2})\.\s", text[start:end])[0].rstrip(".,")
    nxt = text[start + len(span):].lstrip(".,")
    follower = re.match(r"\s+([a-z]+)", nxt)
    if follower and follower.group(1) not in _AFTER and not nxt.startswith((". ", ", ")):
        return None
    return span if len(span) > 1 else None


def reading_pairs(passage: Passage, words: int | None) -> Iterator[tuple[str, str, str]]:
    """``(pattern name, question, answer)`` for each pattern that finds its answer in ``passage``'s
    text as inserted (``"title. text"`` cut to ``words`` words); an answer equal to or inside the
    title (nothing to read) is skipped."""
    inserted = cut_words(passage.contents, words)
    body = inserted[len(passage.title) + 2:] if inserted.startswith(passage.title + ". ") else inserted
    subject = re.escape(passage.title.split(" (")[0])
    for pat in PATTERNS:
        m = re.search(pat.regex.replace("{subject}", subject), body)
        if not m or (pat.topic is not None and passage.meta.get("topic") != pat.topic):
            continue
        if m.end(1) >= len(body) - 4:  # the cut may have ended the span early
            continue
        if pat.is_name:
            ans = _name_span(body, m.start(1), m.end(1))
        elif pat.life_span:
            born, died = int(m.group(1)), m.group(2)
            lead = body[:body.index("(")]  # the subject's name, not a clause ("X is a poem by Y (1608-1674)")
            ok = 300 <= born and " is " not in lead and (died is None or 15 <= int(died) - born <= 110)
            ans = m.group(1) if ok else None
        else:
            ans = m.group(1)
        if ans and ans.lower() not in passage.title.lower():
            yield pat.name, pat.question.format(t=passage.title), ans
