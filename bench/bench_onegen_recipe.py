"""The held-out figures of a trained OneGen model, by one command (docs/onegen.md, "The trained
default model"): every figure of the OneGen quality targets, for a model folder.

    python bench/bench_onegen_recipe.py [--model DIR] [--data DIR] [--jobs 2] [--parts lm,retrieval,linking,single,multi]

Parts (each a `unirag eval` command run as a subprocess with one torch thread, ``--jobs`` at a time,
so the two indexes the model needs are embedded side by side on a 2-core machine):

* ``lm``: held-out LM loss (ordinary text tokens and OneGen tokens) on the held-out file of the
  model's own data and on the first release's held-out file (``unirag train onegen-data --preset
  first-release --out runs/onegen/data-v1``), so two models compare on the same tokens;
* ``retrieval``: recall@1/5/20 of the model's own query vectors over all 10,033 passages
  (``unirag eval retrieval --retriever onegen``; builds the model's document index once);
* ``linking``: the NIL threshold fitted on 120 development documents (training-split documents the
  model did not train on) and saved into the model folder, then strict micro P/R/F1 and
  disambiguation accuracy on 120 held-out documents with and without it (``unirag eval linking
  --tune``; builds the entity index once; the packaged adapter is measured with the threshold it
  ships, never written to);
* ``single``: the 160 held-out sub-questions, OneGen against retrieve-then-read top-1 with the same LM;
* ``multi``: the 93 held-out top-level questions (128 new tokens), OneGen against retrieve-then-read top-3.

Writes ``bench/results/onegen_recipe.json`` (``--out``) and prints a table of the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, table  # noqa: E402

PARTS = ("lm", "retrieval", "linking", "single", "multi")
ORDER = ("retrieval", "linking", "single", "multi")   # index builds first, so the QA runs find them


def _cli(args: list[str], log: Path) -> dict:
    """Run ``unirag ARGS --json`` with one torch thread; its JSON report."""
    env = dict(os.environ, OMP_NUM_THREADS="1", UNIRAG_THREADS="1", TOKENIZERS_PARALLELISM="false")
    t = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "unirag.cli.app", *args, "--json"], stdout=subprocess.PIPE,
                              stderr=fh, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}); see {log}")
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    out["wall_seconds"] = time.time() - t
    return out


def lm_losses(model_dir: str, files: dict[str, str], docs: str) -> dict:
    """Held-out LM loss of the model on each ``name -> heldout.jsonl`` (all, text, OneGen tokens)."""
    import torch

    from unirag.onegen.collator import OneGenCollator
    from unirag.onegen.data import load_documents
    from unirag.onegen.model import OneGenModel
    from unirag.train.onegen import encode_file, heldout_lm_loss

    torch.set_num_threads(int(os.environ.get("UNIRAG_THREADS", "2")))
    model = OneGenModel.from_pretrained(model_dir)
    d = load_documents(docs)
    out = {}
    for name, path in files.items():
        if not Path(path).is_file():
            out[name] = {"missing": path}
            continue
        enc = encode_file(path, model, d, 512)
        out[name] = heldout_lm_loss(model, enc, OneGenCollator(model.tokenizer, model.config, d))
    return out


def run(model: str, parts: list[str], jobs: int, logs: Path, data: Path = Path("runs/onegen/data")) -> dict:
    """Every requested part; ``{part: report}``. ``data``: the model's training data folder (its
    ``train.jsonl`` splits retrieval by training positive, its ``heldout.jsonl`` gives the LM loss)."""
    logs.mkdir(parents=True, exist_ok=True)
    from unirag.onegen.model import is_packaged_adapter

    m = ["--model", model]
    commands = {
        "retrieval": ["eval", "retrieval", "--split", "heldout", "--retriever", "onegen", "--ks", "1,5,20", *m,
                      "--train-file", str(data / "train.jsonl")],
        # the packaged adapter ships its tuned threshold (and is not written to): measured with it
        "linking": ["eval", "linking", "--limit", "120", *m,
                    *([] if is_packaged_adapter(model) else ["--tune", "--train-file", str(data / "train.jsonl")])],
        "single": ["eval", "qa", "--set", "fanoutqa-single", "--engine", "onegen,pipeline", "-k", "1",
                   "--generator", "onegen", *m, "--out", str(logs / "single")],
        "multi": ["eval", "qa", "--set", "fanoutqa-multi", "--engine", "onegen,pipeline", "--generator", "onegen",
                  "--max-new-tokens", "128", *m, "--out", str(logs / "multi")],
    }
    todo = [p for p in ORDER if p in parts]
    out: dict = {}
    # the two index builds (retrieval: documents, linking: entities) go first, side by side
    first, rest = [p for p in todo if p in ("retrieval", "linking")], [p for p in todo if p in ("single", "multi")]
    for group in (first, rest):
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = {p: pool.submit(_cli, commands[p], logs / f"{p}.log") for p in group}
            for p, f in futures.items():
                out[p] = f.result()
                print(f"{p}: done in {out[p]['wall_seconds']:.0f} s", flush=True)
    if "lm" in parts:
        from unirag.onegen.docindex import resolve_onegen_dir

        root = Path("runs/onegen")
        out["lm"] = lm_losses(model or str(resolve_onegen_dir(None)),
                              {"own_heldout": str(data / "heldout.jsonl"),
                               "first_release_heldout": str(root / "data-v1" / "heldout.jsonl")},
                              str(data / "docs.jsonl"))
    return out


def summary_rows(res: dict) -> list[dict]:
    """The target table: what each figure is, its value, the target."""
    rows = []
    def engines(part: str) -> dict:   # `eval qa --json` reports per engine
        rep = res.get(part, {})
        return rep.get("engines", rep.get("systems", {}))

    s = engines("single")
    if s:
        og, pipe = s["onegen"], s["pipeline"]
        rows += [{"figure": "single-hop EM, OneGen", "value": og["em"], "target": f">= pipeline top-1 ({pipe['em']:.1f})"},
                 {"figure": "single-hop F1, OneGen / pipeline top-1", "value": f"{og['f1']:.1f} / {pipe['f1']:.1f}", "target": ""},
                 {"figure": "single-hop evidence recall, OneGen", "value": og["evidence_recall"], "target": ">= 85"},
                 {"figure": "single-hop time, OneGen / pipeline", "value": og["seconds"] / pipe["seconds"], "target": "<= 0.6"}]
    m = engines("multi")
    if m:
        og, pipe = m["onegen"], m["pipeline"]
        rows += [{"figure": "multi-hop retrievals per question (all have >= 5 leaves)", "value": og["mean_retrievals"], "target": ">= 2"},
                 {"figure": "multi-hop evidence recall, OneGen", "value": og["evidence_recall"], "target": f">= pipeline top-3 ({pipe['evidence_recall']:.1f})"},
                 {"figure": "multi-hop EM / F1, OneGen", "value": f"{og['em']:.1f} / {og['f1']:.1f}", "target": ">= 4.3 / 6.4"},
                 {"figure": "multi-hop per-hop hit rate, OneGen", "value": " ".join(f"{x:.1f}" for x in og["hop_hit_rate"]), "target": ""}]
    link = res.get("linking", {})
    if link:
        rows += [{"figure": "linking strict micro F1 (NIL threshold / none)",
                  "value": f"{link['f1']:.1f} / {link['without_threshold']['f1']:.1f}", "target": ">= 40"},
                 {"figure": "linking disambiguation accuracy", "value": link["disambiguation_accuracy"], "target": ">= 90"}]
    r = res.get("retrieval", {}).get("results", {}).get("onegen", {})
    if r:
        rows.append({"figure": "held-out recall@1 / @5 / @20, OneGen query vectors",
                     "value": " / ".join(f"{r[f'recall@{k}']:.3f}" for k in (1, 5, 20)), "target": ""})
    lm = res.get("lm", {}).get("first_release_heldout", {})
    if "text" in lm:
        rows.append({"figure": "held-out LM loss, text tokens (first-release file)", "value": lm["text"], "target": "<= 1.643 x 1.05 = 1.725"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="OneGen model folder (default: the trained default model, else "
                    "the packaged adapter, as the engine opens)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--jobs", type=int, default=2, help="evaluations run side by side (one thread each)")
    ap.add_argument("--logs", default="runs/onegen/recipe", help="folder for logs and per-question predictions")
    ap.add_argument("--data", default="runs/onegen/data",
                    help="the model's training data folder (train.jsonl, heldout.jsonl, docs.jsonl)")
    ap.add_argument("--out", default=str(RESULTS / "onegen_recipe.json"))
    ap.add_argument("--table-only", action="store_true", help="print the table of an existing --out file")
    a = ap.parse_args()
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad} (known: {', '.join(PARTS)})")
    model = a.model
    if not model:
        from unirag.onegen.docindex import resolve_onegen_dir

        model = str(resolve_onegen_dir(None))
    if a.table_only:
        res = json.loads(Path(a.out).read_text())
    else:
        res = {"model": model, "parts": parts, "data": a.data, **run(model, parts, a.jobs, Path(a.logs), Path(a.data))}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(summary_rows(res), f"OneGen held-out figures ({model})"))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
