"""Store URIs, lazy clients and store-backed index folders, without any server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unirag.index import IndexFolder, IndexFormatError, create_store, is_store_uri, open_index
from unirag.index.store import parse_store_uri


def test_pgvector_uri_parts_and_public_form_without_password():
    spec = parse_store_uri("pgvector://bob:s3cret@db.example:5433/corpus?table=wiki&index=hnsw&m=32&sslmode=require")
    assert (spec.kind, spec.user, spec.password, spec.host, spec.port) == ("pgvector", "bob", "s3cret", "db.example", 5433)
    assert (spec.database, spec.name) == ("corpus", "wiki")
    assert spec.options == {"index": "hnsw", "m": "32"} and spec.params == {"sslmode": "require"}
    public = spec.public()
    assert "s3cret" not in public and public.startswith("pgvector://bob@db.example:5433/corpus?")
    assert parse_store_uri(public).options == spec.options  # the public form parses back


def test_pgvector_unix_socket_form():
    spec = parse_store_uri("pgvector://postgres@/postgres?host=/tmp/sock%20dir&table=public.vecs")
    assert spec.host == "/tmp/sock dir" and spec.port is None and spec.name == "public.vecs"
    assert parse_store_uri(spec.public()).host == "/tmp/sock dir"


def test_milvus_uri():
    spec = parse_store_uri("milvus://localhost:19531/wiki?index=HNSW&M=32&ef=64&db=prod")
    assert (spec.host, spec.port, spec.name) == ("localhost", 19531, "wiki")
    assert spec.options == {"index": "HNSW", "M": "32", "ef": "64"} and spec.params == {"db": "prod"}
    assert parse_store_uri("milvus://h/c").port is None  # 19530 is used


@pytest.mark.parametrize("uri, match", [
    ("pgvector://h/db?table=drop table", "bad table"),
    ("pgvector://h/?table=t", "no database"),
    ("milvus://h:19530/", "no collection"),
    ("milvus://h:19530/a-b", "bad table/collection"),
    ("qdrant://h/c", "not a store URI"),
])
def test_bad_uris(uri, match):
    with pytest.raises(IndexFormatError, match=match):
        parse_store_uri(uri)


def test_is_store_uri():
    assert is_store_uri("pgvector://x/db") and is_store_uri("milvus://x/c")
    assert not is_store_uri("/data/index") and not is_store_uri("indexes/milvus") and not is_store_uri(None)


@pytest.mark.parametrize("uri, extra, module", [("pgvector://h/db?table=t", "pgvector", "psycopg"),
                                                ("milvus://h/c", "milvus", "pymilvus")])
def test_a_missing_client_names_the_extra(monkeypatch, uri, extra, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'unirag\[{extra}\]'"):
        create_store(uri, 8)


def test_importing_unirag_index_loads_no_client():
    code = ("import sys, unirag, unirag.index, unirag.retrieval; "
            "print([m for m in ('psycopg', 'pymilvus', 'grpc') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture
def store_folder(tmp_path):
    """A FAISS folder whose manifest is then pointed at a (non-existent) pgvector store."""
    from tests.stores.test_stores import HashEncoder, passages
    from unirag.retrieval.build import build_index

    out = build_index(passages(20), tmp_path / "idx", encoder=HashEncoder(), bm25=False, progress=False)
    folder = IndexFolder(out)
    m = json.loads(folder.manifest_file.read_text())
    m["extra"]["store"] = f"pgvector://nobody@/nodb?host={tmp_path}/no-socket&table=vecs"
    folder.manifest_file.write_text(json.dumps(m))
    return folder


def test_a_folder_pointing_at_a_store_opens_the_store(store_folder):
    assert store_folder.has_dense
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'unirag[pgvector]')")
    with pytest.raises(ConnectionError, match="pgvector://nobody@/nodb.*cannot connect"):
        open_index(store_folder.path)


def test_update_refuses_a_store_backed_folder(store_folder):
    from tests.stores.test_stores import HashEncoder
    from unirag.config.errors import UsageError
    from unirag.corpus import Passage
    from unirag.retrieval import update_index

    with pytest.raises(UsageError, match="external store pgvector://"):
        update_index(store_folder.path, encoder=HashEncoder(), add=[Passage("new", "river city")])


def test_cli_export_store_rejects_a_path_as_uri(tmp_path, capsys):
    from unirag.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(["index", "export-store", str(tmp_path), str(tmp_path / "x")])
    assert exc.value.code == 2 and "expected pgvector://" in capsys.readouterr().err
