"""Documents through the server: files uploaded to ``POST /documents/files`` are ingested by the
same operations as ``unirag index add`` (a real PDF by fpdf2, a real .docx by python-docx), found by
``/search`` with page and heading citations, listed by ``GET /documents``, and gone after
``DELETE /documents/{id}``; limits, the API key and bad files answer in the JSON error shape."""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest

import unirag
from tests import files
from tests.serve.conftest import KEY, live
from unirag.serve import ServeConfig, create_app

pytest.importorskip("multipart")  # python-multipart: starlette's form parser
pytest.importorskip("pypdf")
pytest.importorskip("docx")
fpdf = pytest.importorskip("fpdf")

AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TOKENS = 60  # the tiny test encoder has 128 positions


def pdf_bytes(tmp_path) -> bytes:
    pages = [("Introduction", "Lighthouses guide ships along rocky northern coasts at night."),
             ("Results", "The puffin colony doubled between the two surveys of the archipelago.")]
    return files.write_pdf(tmp_path / "report.pdf", pages).read_bytes()


def docx_bytes() -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Orchard handbook", 0)
    d.add_heading("Planting", 1)
    d.add_paragraph("Plant the quince saplings in late autumn when the soil is still warm.")
    d.add_heading("Pests", 2)
    d.add_paragraph("Codling moths lay eggs on young apples in early summer.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


@pytest.fixture()
def served(tmp_path, tiny_encoder_dir):
    """A server (API key, a 300 kB body limit) over a hybrid index made from one Markdown note."""
    from unirag.retrieval.ingest import sync_folder

    src = tmp_path / "src"
    src.mkdir()
    (src / "note.md").write_text("# Gardens\n\nSparrows visit the feeder in the walled garden every morning.\n")
    folder = tmp_path / "ix"
    sync_folder(folder, src, str(tiny_encoder_dir), max_tokens=MAX_TOKENS)  # records the chunking
    rag = unirag.RAG.load(folder, engine="pipeline", generator=None, retriever="hybrid", progress=False)
    with live(create_app({"pipeline": rag}, ServeConfig(api_key=KEY, max_body_bytes=300_000))) as url:
        yield url, folder


def search(url: str, query: str, k: int = 3) -> list[dict]:
    r = httpx.post(url + "/search", json={"query": query, "k": k}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def is_error(r: httpx.Response, status: int, code: str) -> bool:
    body = r.json()
    return (r.status_code == status and set(body) == {"error"} and body["error"]["code"] == code
            and {"message", "type", "code"} <= set(body["error"]) and "Traceback" not in r.text)


def test_upload_search_cite_list_and_delete(served, tmp_path):
    url, folder = served
    pdf, word = pdf_bytes(tmp_path), docx_bytes()
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    files = [("files", ("report.pdf", pdf, "application/pdf")),
             ("files", ("orchard.docx", word, docx_type)),
             ("files", ("broken.docx", b"PK\x03\x04 not really a zip", "application/octet-stream")),
             ("files", ("empty.txt", b"", "text/plain"))]
    r = httpx.post(url + "/documents/files", files=files, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is False  # one file failed: said in the summary, not by an error
    rep = body["engines"]["pipeline"]
    docs = {d["id"]: d for d in rep["documents"]}
    assert docs["report.pdf"]["action"] == "added" and docs["report.pdf"]["format"] == "pdf"
    assert docs["orchard.docx"]["action"] == "added" and docs["orchard.docx"]["passages"] >= 2
    assert docs["broken.docx"]["status"] == "failed" and docs["broken.docx"]["reason"]
    assert docs["empty.txt"]["status"] == "skipped" and docs["empty.txt"]["reason"]
    assert rep["counts"]["added"] == 2 and rep["written"] and rep["update"]["passages"] == 1 + 2 + docs["orchard.docx"][
        "passages"]
    assert all("path" not in d for d in rep["documents"]) and "folder" not in rep  # no server paths
    # searched with page and heading citations
    hit = search(url, "puffin colony doubled archipelago")[0]
    assert hit["id"].startswith("report.pdf#") and hit["meta"]["page"] == 2
    assert hit["meta"]["cite"] == 'report.pdf, p. 2, "Results"'
    hit = search(url, "codling moths apples")[0]
    assert hit["id"].startswith("orchard.docx#") and hit["meta"]["cite"] == 'orchard.docx, "Pests"'
    # listed, like `unirag index docs`
    r = httpx.get(url + "/documents", headers=AUTH)
    listed = {d["id"]: d for d in r.json()["documents"]}
    assert r.status_code == 200 and set(listed) == {"note.md", "report.pdf", "orchard.docx", "broken.docx", "empty.txt"}
    assert listed["report.pdf"]["status"] == "indexed" and listed["report.pdf"]["passages"] == 2
    assert listed["report.pdf"]["sha256"] == hashlib.sha256(pdf).hexdigest() and listed["report.pdf"]["pages"] == 2
    assert "path" not in listed["report.pdf"] and listed["note.md"]["path"].endswith("note.md")
    failed = httpx.get(url + "/documents", params={"status": "failed"}, headers=AUTH).json()
    assert [d["id"] for d in failed["documents"]] == ["broken.docx"] and failed["count"] == 1
    # the same file again: unchanged, nothing written
    r = httpx.post(url + "/documents/files", files=[("files", ("report.pdf", pdf, "application/pdf"))], headers=AUTH,
                   timeout=60)
    assert r.json()["engines"]["pipeline"]["documents"][0]["action"] == "unchanged"
    assert r.json()["ok"] and not r.json()["engines"]["pipeline"]["written"]
    # deleted by its id: no hit, no listing, no text in the folder
    r = httpx.delete(url + "/documents/report.pdf", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    rep = r.json()["engines"]["pipeline"]
    assert rep["counts"]["deleted"] == 1 and rep["update"]["deleted"] == 2
    assert all(not h["id"].startswith("report.pdf") for h in search(url, "puffin colony lighthouses", 10))
    assert "report.pdf" not in {d["id"] for d in httpx.get(url + "/documents", headers=AUTH).json()["documents"]}
    for f in folder.rglob("*"):
        assert not f.is_file() or b"puffin" not in f.read_bytes(), f
    r = httpx.delete(url + "/documents/report.pdf", headers=AUTH, timeout=60)
    assert is_error(r, 404, "document_not_found")
    # uploads under a folder: ids under it, deleted as a folder prefix
    r = httpx.post(url + "/documents/files", data={"folder": "garden/2024"}, headers=AUTH, timeout=60,
                   files=[("files", ("a.md", b"# Herons\n\nA grey heron waits in the reeds.\n", "text/markdown")),
                          ("files", ("b.txt", b"Moles dig tunnels under the lawn.", "text/plain"))])
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert search(url, "grey heron reeds")[0]["meta"]["cite"] == 'garden/2024/a.md, "Herons"'
    r = httpx.delete(url + "/documents/garden/", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["engines"]["pipeline"]["counts"]["deleted"] == 2
    ids = {d["id"] for d in httpx.get(url + "/documents", headers=AUTH).json()["documents"]}
    assert ids == {"note.md", "orchard.docx", "broken.docx", "empty.txt"}
    from unirag.index.folder import IndexFolder

    IndexFolder(folder).verify()


def test_upload_limits_key_and_bad_requests(served):
    url, _ = served
    one = [("files", ("a.md", b"# A\n\nSome text.\n", "text/markdown"))]
    r = httpx.post(url + "/documents/files", files=one)  # no key
    assert is_error(r, 401, "invalid_api_key")
    r = httpx.get(url + "/documents")
    assert is_error(r, 401, "invalid_api_key")
    r = httpx.post(url + "/documents/files", files=[("files", ("big.txt", b"word " * 80_000, "text/plain"))],
                   headers=AUTH)
    assert is_error(r, 413, "body_too_large")
    r = httpx.post(url + "/documents/files", json={"files": ["a.md"]}, headers=AUTH)
    assert is_error(r, 422, "invalid_value") and r.json()["error"]["param"] == "files"
    r = httpx.post(url + "/documents/files", data={"folder": "x"}, files=[("other", ("a.md", b"x", "text/plain"))],
                   headers=AUTH)
    assert is_error(r, 422, "invalid_value")
    r = httpx.post(url + "/documents/files", files=one + one, headers=AUTH)
    assert is_error(r, 422, "duplicate_file")
    r = httpx.post(url + "/documents/files", data={"folder": "../up"}, files=one, headers=AUTH)
    assert is_error(r, 422, "invalid_value") and r.json()["error"]["param"] == "folder"
    # a path in the file name is reduced to its base name
    r = httpx.post(url + "/documents/files", files=[("files", ("../../etc/x.md", b"# X\n\nQuokkas.\n", "text/plain"))],
                   headers=AUTH, timeout=60)
    assert r.status_code == 200 and [d["id"] for d in r.json()["engines"]["pipeline"]["documents"]] == ["x.md"]
    r = httpx.delete(url + "/documents/nope.pdf", headers=AUTH)
    assert is_error(r, 404, "document_not_found")
    r = httpx.delete(url + "/documents/note.md", headers=AUTH)  # by the id of a file synced on the server
    assert r.status_code == 200
    r = httpx.delete(url + "/documents/x.md", headers=AUTH)  # the last document: the index cannot be emptied
    assert is_error(r, 422, "invalid_documents")
