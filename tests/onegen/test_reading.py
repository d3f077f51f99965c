"""Reading examples: each pattern finds a span of the passage as inserted, and refuses doubtful ones."""

from __future__ import annotations

from unirag.corpus import Passage
from unirag.onegen.config import OneGenConfig
from unirag.onegen.datasets import reading_examples
from unirag.onegen.reading import reading_pairs


def _p(title: str, text: str, topic: str = "") -> Passage:
    return Passage(title, text, title, meta={"topic": topic})


def test_patterns_read_their_answer_from_the_passage():
    film = _p("Jaws (film)", "Jaws is a 1975 American thriller film directed by Steven Spielberg and based on a novel.")
    assert list(reading_pairs(film, 48)) == [
        ("director", "Who directed Jaws (film)?", "Steven Spielberg"),
        ("film year", "In what year was Jaws (film) released?", "1975")]
    person = _p("Hafez", "Hafez (1325–1390) was a Persian poet who wrote lyric poems.", topic="People")
    assert ("birth year", "In what year was Hafez born?", "1325") in list(reading_pairs(person, 48))
    assert ("nationality", "What is the nationality of Hafez?", "Persian") in list(reading_pairs(person, 48))
    city = _p("Dakar", "Dakar is the capital and largest city of Senegal. It lies on the Cap-Vert peninsula.")
    assert list(reading_pairs(city, 48)) == [("capital of", "Of which place is Dakar the capital?", "Senegal")]
    element = _p("Cobalt", "Cobalt is a chemical element; it has symbol Co and atomic number 27. It is hard.")
    assert list(reading_pairs(element, 48)) == [("atomic number", "What is the atomic number of Cobalt?", "27")]


def test_doubtful_spans_give_no_example():
    # a demonym, not a creator
    assert list(reading_pairs(_p("Barbie", "Barbie is a doll created by American toy company Mattel in 1959."), 48)) == []
    # a life span of something that is not a person, and an impossible one
    war = _p("Great Northern War", "The Great Northern War (1700–1721) was a conflict in Europe.", topic="History")
    assert [n for n, _, _ in reading_pairs(war, 48) if n == "birth year"] == []
    odd = _p("Someone", "Someone (1900–2050) was a writer of books.", topic="People")
    assert [n for n, _, _ in reading_pairs(odd, 48) if n == "birth year"] == []
    # the answer sits at the cut: the name may go on past it
    cut = _p("Toy Story", "Toy Story is a 1995 American animated film directed by John Lasseter and produced by Pixar.")
    assert ("director", "Who directed Toy Story?", "John Lasseter") in list(reading_pairs(cut, 48))
    assert [n for n, _, _ in reading_pairs(cut, 12) if n == "director"] == []
    # an answer that is (part of) the title teaches nothing about reading
    assert list(reading_pairs(_p("Ford Motor Company", "It was founded by Henry Ford in 1903."), 48)) == [
        ("founder", "Who founded Ford Motor Company?", "Henry Ford")]
    assert list(reading_pairs(_p("Henry Ford", "The company Henry Ford was founded by Henry Ford in 1903."), 48)) == []


def test_reading_examples_exclude_take_turns_and_limit():
    passages = [_p(f"City{i}", f"City{i} is the capital of Country{i}. It is large.") for i in range(5)]
    passages += [_p(f"El{i}", f"El{i} is a chemical element with atomic number {i + 1} and more words.") for i in range(5)]
    cfg = OneGenConfig()
    out = reading_examples(passages, cfg, exclude={"City0"}, limit=4)
    assert len(out) == 4 and "read:City0" not in {e.id for e in out}
    kinds = [e.messages[0]["content"].split()[0] for e in out]
    assert kinds.count("Of") == 2 and kinds.count("What") == 2  # the two patterns alternate
    ex = out[0]
    assert ex.retrievals[0].positives == [ex.id[5:]]
    assert ex.messages[1]["content"].startswith(cfg.token("query") + cfg.passage_start)
