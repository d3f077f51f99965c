import json

import pytest

from unirag.corpus import CorpusError, DocStore, Passage, read_corpus, split_passages


def test_read_jsonl_keeps_metadata(corpus_jsonl):
    ps = list(read_corpus(corpus_jsonl))
    assert [p.id for p in ps] == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert ps[0].title == "Mona Lisa" and ps[0].meta == {"topic": "Arts"}
    assert ps[0].contents.startswith("Mona Lisa. The Mona Lisa")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "b", "text": \n')
    with pytest.raises(CorpusError, match=r"c.jsonl:3: invalid JSON"):
        list(read_corpus(path))
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: missing field 'text'"):
        list(read_corpus(path))


def test_read_tsv_and_folder(tmp_path):
    tsv = tmp_path / "psgs.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tAaron is a prophet.\tAaron\n2\tZebras are striped.\tZebra\n")
    ps = list(read_corpus(tsv))
    assert [(p.id, p.title, p.text) for p in ps] == [("1", "Aaron", "Aaron is a prophet."), ("2", "Zebra", "Zebras are striped.")]
    tsv.write_text("id\ttext\ttitle\n1\tonly two\n")
    with pytest.raises(CorpusError, match=r"psgs.tsv:2: expected 3 columns"):
        list(read_corpus(tsv))
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "b_note.md").write_text("# B\nbee text")
    (folder / "sub" / "a.txt").write_text("alpha text\n")
    (folder / "skip.bin").write_bytes(b"\x00")
    ps = list(read_corpus(folder))
    assert [p.id for p in ps] == ["b_note.md", "sub/a.txt"]
    assert ps[0].title == "b note" and ps[1].text == "alpha text"


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read_corpus(tmp_path / "x.csv")
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(tmp_path / "nope.jsonl")


def test_split_passages_words_and_overlap():
    doc = Passage("d", " ".join(f"w{i}" for i in range(250)), "T", {"k": 1})
    pieces = list(split_passages([doc], words=100))
    assert [len(p.text.split()) for p in pieces] == [100, 100, 50]
    assert pieces[2].id == "d#2" and pieces[2].text.split()[0] == "w200" and pieces[2].meta["doc_id"] == "d"
    pieces = list(split_passages([doc], words=100, overlap=20))
    starts = [int(p.text.split()[0][1:]) for p in pieces]
    assert starts == [0, 80, 160] and pieces[-1].text.split()[-1] == "w249"
    short = Passage("s", "just a few words")
    assert list(split_passages([short], words=100)) == [short]


def test_docstore_round_trip(tmp_path, corpus_jsonl):
    store = DocStore.build(read_corpus(corpus_jsonl), tmp_path / "store")
    assert len(store) == 6
    assert store.get("p4").title == "Jupiter" and store.get("p4").meta == {"topic": "Science"}
    assert store.row_of("p5") == 4 and store[4].id == "p5"
    assert store.ids([2, -1, 0]) == ["p3", "", "p1"]
    assert "p1" in store and "zzz" not in store
    with pytest.raises(KeyError):
        store.get("zzz")
    again = DocStore(tmp_path / "store")
    assert [p.id for p in again] == [p.id for p in store]
    assert again.checksum == store.checksum


def test_docstore_rejects_duplicates_and_empty(tmp_path):
    with pytest.raises(CorpusError, match="duplicate passage id 'a'"):
        DocStore.build([Passage("a", "x"), Passage("b", "y"), Passage("a", "z")], tmp_path / "s1")
    with pytest.raises(CorpusError, match="corpus is empty"):
        DocStore.build([], tmp_path / "s2")


def test_docstore_unicode_offsets(tmp_path):
    ps = [Passage(f"é{i}", "naïve café " * i, "Ünï") for i in range(1, 30)]
    store = DocStore.build(ps, tmp_path / "s")
    assert store.get("é17").text == "naïve café " * 17
    assert json.loads((tmp_path / "s" / "store.json").read_text())["count"] == 29
