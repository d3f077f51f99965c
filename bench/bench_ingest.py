"""Ingest benchmark: throughput per format (files/s, passages/s) and a no-change ``sync`` of 1,000 files.

    python bench/bench_ingest.py [--encoder all-minilm-l6-v2] [--files 40] [--sync-files 1000] [--threads N]

Writes bench/results/ingest.json and prints tables. Per format, ``--files`` generated files
(PDF via fpdf2, .docx via python-docx, HTML with navigation boilerplate, Markdown, text) are
(1) read and chunked only (``read+chunk``), (2) ingested end to end into a new index
(``ingest``: reading, chunking, embedding with the encoder, FAISS, BM25, doc store, atomic write).
Then a 1,000-file Markdown folder is synced into an index, and a second ``sync`` with nothing changed
is timed (the (size, mtime) fast path: no file is opened), then one with ``--checksum`` (every file
hashed), then one after editing a single file. The load average is recorded: the machine is shared
(on a busy machine ``--threads 1`` is often faster: torch threads contend with other processes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

TOPICS = ["otters", "glaciers", "violins", "comets", "lichens", "tides", "falcons", "bridges", "mosses", "dunes"]


def para(i: int, j: int) -> str:
    t = TOPICS[(i + j) % len(TOPICS)]
    return (f"Paragraph {j} of document {i} describes {t} observed near site {i * 7 + j}. The survey team "
            f"recorded {t} at dawn and dusk, compared the counts with earlier seasons and noted weather, tide "
            f"and light conditions for each of the {j + 3} visits.")


def make(fmt: str, folder: Path, n: int, paras: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = [para(i, j) for j in range(paras)]
        if fmt == "markdown":
            text = f"# Document {i}\n\n" + "".join(f"## Part {j}\n\n{b}\n\n" for j, b in enumerate(body))
            (folder / f"d{i:04d}.md").write_text(text)
        elif fmt == "text":
            (folder / f"d{i:04d}.txt").write_text("\n\n".join(body))
        elif fmt == "html":
            parts = "".join(f"<h2>Part {j}</h2><p>{b}</p>" for j, b in enumerate(body))
            (folder / f"d{i:04d}.html").write_text(
                f"<!doctype html><html><head><title>Doc {i}</title></head><body><nav><a href='/'>Home</a>"
                f"<a href='/x'>Shop</a></nav><main><article><h1>Document {i}</h1>{parts}</article></main>"
                f"<footer>Copyright footer text, privacy policy</footer></body></html>")
        elif fmt == "docx":
            import docx

            d = docx.Document()
            d.add_heading(f"Document {i}", 0)
            for j, b in enumerate(body):
                d.add_heading(f"Part {j}", 1)
                d.add_paragraph(b)
            d.save(str(folder / f"d{i:04d}.docx"))
        elif fmt == "pdf":
            import fpdf

            pdf = fpdf.FPDF()
            pdf.set_font("helvetica", size=11)
            for j, b in enumerate(body):
                if j % 2 == 0:
                    pdf.add_page()
                pdf.start_section(f"Part {j}")
                pdf.multi_cell(0, 6, f"Part {j}\n{b}", new_x="LMARGIN", new_y="NEXT")
            pdf.output(str(folder / f"d{i:04d}.pdf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="all-minilm-l6-v2")
    ap.add_argument("--files", type=int, default=40, help="files per format for throughput")
    ap.add_argument("--sync-files", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from unirag.corpus.chunking import TokenCounter, chunk_document
    from unirag.corpus.documents import iter_files, read_document
    from unirag.models import Encoder
    from unirag.retrieval.ingest import sync_folder

    load_before = os.getloadavg()
    enc = Encoder.from_pretrained(args.encoder)
    counter = TokenCounter(enc.tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    rows = []
    try:
        for fmt in ("text", "markdown", "html", "docx", "pdf"):
            src = tmp / fmt
            make(fmt, src, args.files)
            t0 = time.perf_counter()
            n_pass = 0
            for rel, path in iter_files(src):
                n_pass += len(chunk_document(read_document(path, rel), counter, args.max_tokens))
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = sync_folder(tmp / f"ix-{fmt}", src, enc, max_tokens=args.max_tokens)
            t_all = time.perf_counter() - t0
            assert res.ok and res.update.passages == n_pass, res.summary()
            rows.append({"format": fmt, "files": args.files, "passages": n_pass,
                         "read+chunk files/s": args.files / t_read, "read+chunk passages/s": n_pass / t_read,
                         "ingest files/s": args.files / t_all, "ingest passages/s": n_pass / t_all,
                         "ingest s": t_all})
        print(table(rows, f"ingest throughput ({args.encoder}, {args.max_tokens}-token passages)"))

        src = tmp / "sync"
        make("markdown", src, args.sync_files, paras=2)
        ix = tmp / "ix-sync"
        t0 = time.perf_counter()
        first = sync_folder(ix, src, enc, max_tokens=args.max_tokens)
        t_first = time.perf_counter() - t0
        sync_rows = [{"sync": f"first ({args.sync_files} new files)", "seconds": t_first,
                      "embedded": first.update.embedded, "written": first.written}]
        for label, kw in (("no change (size+mtime fast path)", {}), ("no change, --checksum (hash every file)",
                                                                     {"checksum": True})):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                r = sync_folder(ix, src, enc, **kw)
                times.append(time.perf_counter() - t0)
                assert not r.written and r.count("unchanged") == args.sync_files
            sync_rows.append({"sync": label, "seconds": min(times), "embedded": 0, "written": False})
        (src / "d0007.md").write_text((src / "d0007.md").read_text() + "\nOne more line about otters.\n")
        t0 = time.perf_counter()
        r = sync_folder(ix, src, enc)
        sync_rows.append({"sync": "one file edited", "seconds": time.perf_counter() - t0,
                          "embedded": r.update.embedded, "written": r.written})
        # the CLI end to end (a new process: imports included)
        import subprocess

        t0 = time.perf_counter()
        cp = subprocess.run([sys.executable, "-m", "unirag.cli.app", "index", "sync", str(src), "--index", str(ix),
                             "--json"], capture_output=True, text=True)
        assert cp.returncode == 0, cp.stderr
        sync_rows.append({"sync": "no change, `unirag index sync` CLI process", "seconds": time.perf_counter() - t0,
                          "embedded": 0, "written": False})
        print()
        print(table(sync_rows, f"sync of a {args.sync_files}-file folder"))
        load_after = os.getloadavg()
        print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores, "
              f"{torch.get_num_threads()} torch thread(s)")
        path = save("ingest", {"encoder": args.encoder, "max_tokens": args.max_tokens, "throughput": rows,
                               "sync_files": args.sync_files, "sync": sync_rows,
                               "loadavg_before": load_before, "loadavg_after": load_after,
                               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()})
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
