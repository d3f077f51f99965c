"""First answer on a fresh machine: corpus embedding throughput (float32 / int8 encoder on torch, float32
on ONNX Runtime; 1 / 2 threads)
against the float32 matrix-multiply limit, the generator conversion, the empty-cache `unirag ask`,
and warm `unirag search` / `unirag ask` start times.

    python bench/bench_first_answer.py                      # throughput on a 512-passage sample
    python bench/bench_first_answer.py --convert            # + GGUF -> safetensors in an empty cache
    python bench/bench_first_answer.py --fresh-ask          # + `unirag ask` with an empty UNIRAG_CACHE
    python bench/bench_first_answer.py --warm               # + warm `unirag search` / `unirag ask`
    python bench/bench_first_answer.py --only warm          # one step; the others stay in the JSON
    python bench/bench_first_answer.py --only batching      # padded-token budget per batch, side by side
    python bench/bench_first_answer.py --only onnx          # ONNX Runtime queries against torch: same hits?
    python bench/bench_first_answer.py --only install       # ./install.sh [--dev] in a new venv, uv against pip (minutes, network)
    python bench/bench_first_answer.py --only readme        # the README's first command: clean clone, new venv, empty caches

Steps run in separate processes where they time a command; every figure carries the 1-minute load
average read just before it (another busy process on these 2 cores distorts any timing: re-run when
it reads above 1.5). Prints tables and merges into bench/results/first_answer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, table  # noqa: E402

from unirag.models.registry import cpu_model  # noqa: E402

QUESTION = "Who painted the Mona Lisa?"


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _busy_s() -> float:
    """CPU-seconds all cores spent busy since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Others:
    """Cores kept busy by other processes while the block runs (the load average counts this
    benchmark's own threads too)."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_s(), _own_s()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t
        self.cores = max(0.0, (_busy_s() - self.busy - (_own_s() - self.own)) / dt)


def encoder_flops(cfg, lengths: list[int], batch_size: int) -> dict:
    """FLOPs per passage of a BERT encoder over length-sorted batches of ``lengths`` tokens:
    2 x (matmul parameters) x tokens for the projections and the FFN, plus the attention products
    QK^T and AV (2 x 2 x L^2 x hidden per layer per sequence), at the padded length of each batch."""
    h, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    mm_params = layers * (4 * h * h + 2 * h * f)  # Q, K, V, O + FFN up / down
    srt = sorted(lengths, reverse=True)
    useful = sum(2 * mm_params * t + 4 * layers * t * t * h for t in srt) / len(srt)
    padded = 0.0
    for i in range(0, len(srt), batch_size):
        b = srt[i : i + batch_size]
        L = b[0]
        padded += len(b) * (2 * mm_params * L + 4 * layers * L * L * h)
    padded /= len(srt)
    return {"matmul_params": mm_params, "mean_tokens": sum(lengths) / len(lengths),
            "gflop_per_passage": useful / 1e9, "gflop_per_passage_padded": padded / 1e9}


def matmul_gflops(threads: int, n: int = 2048) -> dict:
    """This machine's float32 matrix-multiply rate (best of 5, ``n`` x ``n``) through torch's BLAS and
    through ONNX Runtime's MLAS, on ``threads`` threads: the limit passages/s are held against. (On an
    AMD CPU with AVX-512 the two differ by about 2x: MLAS uses AVX-512, torch's BLAS AVX2 kernels.)"""
    import torch

    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    from unirag.models.encoder import torch_threads

    with torch_threads(threads):
        a @ b
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t)
    out["torch"] = round(2 * n**3 / min(ts) / 1e9, 1)
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return out
    vi = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ABC"]
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "mm", vi[:2], vi[2:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"A": a.numpy(), "B": b.numpy()}
    sess.run(None, feed)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    out["onnxruntime"] = round(2 * n**3 / min(ts) / 1e9, 1)
    return out


def throughput(args) -> dict:
    import numpy as np
    import torch

    from unirag.data import wiki_passages
    from unirag.models.encoder import Encoder

    texts = [p.contents for p in wiki_passages()]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), args.n, replace=False)]
    encs = {d: Encoder.from_pretrained("all-minilm-l6-v2", dtype=d) for d in ("float32", "int8")}
    from unirag.models.onnx_encoder import corpus_encoder

    encs["float32 onnx"] = corpus_encoder("all-minilm-l6-v2")  # what index builds use where ONNX Runtime is installed
    tok = encs["float32"].tokenizer
    ml = encs["float32"].max_length
    t = time.perf_counter()
    all_lens = [len(x) for x in tok(texts, truncation=True, max_length=ml)["input_ids"]]
    tokenize_s = time.perf_counter() - t
    lens = [len(x) for x in tok(sample, truncation=True, max_length=ml)["input_ids"]]
    cfg = encs["float32"].model.config
    corpus = encoder_flops(cfg, all_lens, args.batch_size)
    sub = encoder_flops(cfg, lens, args.batch_size)
    # agreement of the two paths on the sample
    a, b = (encs[d].encode(sample[:128], batch_size=args.batch_size) for d in ("float32", "int8"))
    cos = float(np.median((a * b).sum(1)))
    onnx_diff = float(np.abs(encs["float32 onnx"].encode(sample[:128], batch_size=args.batch_size) - a).max())
    combos = [(d, th) for th in args.threads for d in encs]
    times: dict = {c: [] for c in combos}
    loads: dict = {c: [] for c in combos}
    others: dict = {c: [] for c in combos}
    for d, th in combos:  # warm-up
        encs[d].encode(sample[: args.batch_size], batch_size=args.batch_size, threads=th)
    for _ in range(args.rounds):
        for d, th in combos:
            loads[(d, th)].append(load1())
            with Others() as o:
                t = time.perf_counter()
                encs[d].encode(sample, batch_size=args.batch_size, threads=th)
                times[(d, th)].append(time.perf_counter() - t)
            others[(d, th)].append(o.cores)
    limits = {th: matmul_gflops(th) for th in args.threads}
    rows = []
    for d, th in combos:
        pps = args.n / statistics.median(times[(d, th)])
        gflops = max(limits[th].values())  # the faster of the two BLAS: what the hardware gives
        limit = gflops / sub["gflop_per_passage"]
        rows.append({"encoder": d, "threads": th, "passages_per_s": round(pps, 1),
                     "fp32_limit_per_s": round(limit, 1), "of_limit": round(pps / limit, 2),
                     "achieved_gflops": round(pps * sub["gflop_per_passage"], 1),
                     "full_corpus_min": round(len(texts) / pps / 60, 1),
                     "load1_median": round(statistics.median(loads[(d, th)]), 2),
                     "other_procs_cores": round(statistics.median(others[(d, th)]), 2)})
    return {"n": args.n, "batch_size": args.batch_size, "batch_tokens": encs["float32"].batch_tokens,
            "rounds": args.rounds, "torch": torch.__version__,
            "corpus_passages": len(texts), "corpus_tokens": corpus, "sample_tokens": sub,
            "tokenize_corpus_s": round(tokenize_s, 2), "median_cosine_fp32_int8": cos,
            "max_abs_diff_fp32_torch_onnx": onnx_diff, "matmul_gflops": limits, "rows": rows}


def batching(args) -> dict:
    """Passages/s of the float32 encoder for budgets of padded tokens per batch (0: batches of
    ``--batch-size`` passages only), interleaved rounds on the same sample, medians."""
    import numpy as np

    from unirag.data import wiki_passages
    from unirag.models.encoder import Encoder

    texts = [p.contents for p in wiki_passages()]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), args.n, replace=False)]
    enc = Encoder.from_pretrained("all-minilm-l6-v2")
    budgets = [0, 1024, 2048, 4096]
    combos = [(b, th) for th in args.threads for b in budgets]
    times: dict = {c: [] for c in combos}
    others: dict = {c: [] for c in combos}
    loads: dict = {c: [] for c in combos}
    ref = enc.encode(sample, batch_size=args.batch_size, batch_tokens=0)
    worst = 0.0
    for _ in range(args.rounds):
        for b, th in combos:
            loads[(b, th)].append(load1())
            with Others() as o:
                t = time.perf_counter()
                v = enc.encode(sample, batch_size=args.batch_size, batch_tokens=b, threads=th)
                times[(b, th)].append(time.perf_counter() - t)
            others[(b, th)].append(o.cores)
            worst = max(worst, float(np.abs(v - ref).max()))
    rows = []
    for b, th in combos:
        pps = args.n / statistics.median(times[(b, th)])
        base = args.n / statistics.median(times[(0, th)])
        rows.append({"batch_tokens": b or f"- ({args.batch_size} passages)", "threads": th,
                     "passages_per_s": round(pps, 1), "vs_batch_of_passages": round(pps / base, 2),
                     "full_corpus_min": round(len(texts) / pps / 60, 1),
                     "load1_median": round(statistics.median(loads[(b, th)]), 2),
                     "other_procs_cores": round(statistics.median(others[(b, th)]), 2)})
    return {"n": args.n, "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows,
            "max_abs_diff_vs_batch_of_passages": worst}


def onnx(args) -> dict:
    """The default index's queries on ONNX Runtime against the torch encoder: the held-out FanOutQA
    questions' top-20 ids and scores, and the time to embed them one by one."""
    import numpy as np

    from unirag.data.qa import load_qa_set
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder, export, export_dir
    from unirag.models.registry import resolve_model
    from unirag.retrieval.build import default_index_dir
    from unirag.retrieval.dense import DenseRetriever

    qs = [it.question for it in load_qa_set("fanoutqa-multi")]
    folder = resolve_model("all-minilm-l6-v2")
    torch_enc = Encoder.from_pretrained("all-minilm-l6-v2")
    export(torch_enc, folder)
    onnx_enc = OnnxEncoder(export_dir(folder))
    r = DenseRetriever.load(default_index_dir(), encoder=torch_enc)
    a = r.search_vectors(torch_enc.encode(qs, sort_by_length=False), 20)
    b = r.search_vectors(onnx_enc.encode(qs), 20)
    per_query = {}
    for name, enc in (("torch", torch_enc), ("onnx", onnx_enc)):
        ts = []
        for q in qs:
            t = time.perf_counter()
            enc.encode([q])
            ts.append(time.perf_counter() - t)
        per_query[name] = round(statistics.median(ts) * 1000, 2)
    return {"questions": len(qs), "same_top20_ids": sum(x == y for x, y in zip(a.ids, b.ids)),
            "max_abs_score_diff": float(np.abs(a.scores - b.scores).max()), "ms_per_query_median": per_query,
            "load1": load1()}


def install(args) -> dict:
    """Wall time and size of ``./install.sh`` (the README's command, as a user runs it) in a new venv
    with no pip or uv cache: [app] (the default) and [all] (--dev), through uv (install.sh's
    default) and through pip (``UNIRAG_INSTALLER=pip``), side by side."""
    repo = Path(__file__).resolve().parent.parent
    out: dict = {}
    for extras in args.install_extras.split(","):
        for installer in args.installers.split(","):
            with tempfile.TemporaryDirectory() as d:
                venv = Path(d) / "venv"
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv),
                           PIP_NO_CACHE_DIR="1", UV_NO_CACHE="1", UNIRAG_INSTALLER=installer)
                cmd = ["bash", "install.sh"] + (["--dev"] if extras == "all" else [])
                la = load1()
                t = time.perf_counter()
                subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
                dt = time.perf_counter() - t
                size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
                out[f"{extras} ({installer})"] = {"wall_s": round(dt, 1), "venv_mb": round(size / 2**20),
                                                  "load1_before": la}
                print(f"install [{extras}] with {installer}: {dt:.1f} s", flush=True)
    return out


def _env(cache: str | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if cache:
        env["UNIRAG_CACHE"] = cache
    return env


def _timed(cmd: list[str], env: dict, stdout_only: bool = False) -> tuple[float, float, str]:
    la = load1()
    with Others() as o:
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t
    _LAST["others"] = round(o.cores, 2)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return dt, la, r.stdout if stdout_only else r.stdout + r.stderr


_LAST: dict = {}


def convert(args) -> dict:
    code = ("import time; t=time.perf_counter(); from unirag.models.registry import resolve_model; "
            f"resolve_model({args.convert_model!r}, progress=False); print(round(time.perf_counter()-t, 2))")
    runs = []
    for _ in range(args.convert_rounds):
        with tempfile.TemporaryDirectory() as cache:
            dt, la, text = _timed([sys.executable, "-c", code], _env(cache), stdout_only=True)
            runs.append({"wall_s": round(dt, 1), "convert_s": float(text.strip().splitlines()[-1]), "load1": la,
                         "other_procs_cores": _LAST["others"]})
    return {"model": args.convert_model, "runs": runs, "median_wall_s": statistics.median(r["wall_s"] for r in runs)}


def fresh_ask(args) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        dt, la, text = _timed(["unirag", "ask", QUESTION, "--no-stream"], _env(cache))
    answer = [ln for ln in text.splitlines() if ln.strip()]
    return {"wall_s": round(dt, 1), "load1_before": la, "load1_after": load1(), "threads": "all (default)",
            "other_procs_cores": _LAST["others"],
            "tail": answer[-6:]}


def readme(args) -> dict:
    """The README's first command as a new user runs it: a clean clone, a new venv, no pip, uv or
    unirag cache; ``./install.sh && unirag ask ...`` timed as a whole and by part."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as d:
        clone, venv, cache = Path(d) / "unirag", Path(d) / "venv", Path(d) / "cache"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = dict(_env(str(cache)), PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv),
                   PIP_NO_CACHE_DIR="1", UV_NO_CACHE="1")
        la = load1()
        t = time.perf_counter()
        subprocess.run(["bash", "install.sh"], cwd=clone, env=env, check=True, capture_output=True)
        installed = time.perf_counter() - t
        r = subprocess.run(["unirag", "ask", QUESTION, "--no-stream"], cwd=clone, env=env, capture_output=True,
                           text=True)
        total = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"unirag ask failed ({r.returncode}):\n{r.stderr[-3000:]}")
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    return {"command": f'./install.sh && unirag ask "{QUESTION}"', "install_s": round(installed, 1),
            "ask_s": round(total - installed, 1), "first_answer_s": round(total, 1), "load1_before": la,
            "load1_after": load1(), "tail": lines[-6:]}


def warm(args) -> dict:
    # the default index and generator must already be in the cache (run `unirag ask` once)
    cmds = {"search": ["unirag", "search", QUESTION, "-k", "3"],
            "ask": ["unirag", "ask", QUESTION, "--no-stream"],
            "help": ["unirag", "--help"]}
    out = {}
    for name, cmd in cmds.items():
        _timed(cmd, _env())  # page cache warm
        runs = [(*_timed(cmd, _env())[:2], _LAST["others"]) for _ in range(args.warm_rounds)]
        out[name] = {"median_s": round(statistics.median(r[0] for r in runs), 2),
                     "runs_s": [round(r[0], 2) for r in runs], "load1": [r[1] for r in runs],
                     "other_procs_cores": [r[2] for r in runs]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="passages of the throughput sample")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--convert", action="store_true", help="time the GGUF conversion in an empty cache")
    ap.add_argument("--convert-rounds", type=int, default=1)
    ap.add_argument("--convert-model", default="qwen2.5-coder-0.5b-instruct", help="packaged generator to convert")
    ap.add_argument("--fresh-ask", action="store_true", help="time `unirag ask` with an empty UNIRAG_CACHE (minutes)")
    ap.add_argument("--warm", action="store_true", help="time warm `unirag search` / `unirag ask`")
    ap.add_argument("--warm-rounds", type=int, default=3)
    ap.add_argument("--installers", default="uv,pip", help="install step: UNIRAG_INSTALLER values to time")
    ap.add_argument("--install-extras", default="app,all", help="install step: app (./install.sh), all (--dev)")
    ap.add_argument("--only", choices=["throughput", "batching", "onnx", "install", "readme", "convert", "fresh-ask",
                                                 "warm"],
                    default=None)
    ap.add_argument("--out", help="results file to merge into (default bench/results/first_answer.json; "
                    "one per machine keeps each machine's figures)")
    args = ap.parse_args()

    steps = {"throughput": throughput, "batching": batching, "onnx": onnx, "install": install, "readme": readme, "convert": convert,
             "fresh-ask": fresh_ask, "warm": warm}
    chosen = [args.only] if args.only else ["throughput"] + [s for s in ("convert", "fresh-ask", "warm")
                                                              if getattr(args, s.replace("-", "_"))]
    path = Path(args.out) if args.out else RESULTS / "first_answer.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu_model()}
    for step in chosen:
        print(f"[{step}] load average {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
        r = steps[step](args)
        r["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
        results[step] = r
        if step == "convert":  # the latest run above, and one entry per model
            results.setdefault("convert_by_model", {})[args.convert_model] = r
        if step == "throughput":
            s = r["sample_tokens"]
            print(f"corpus: {r['corpus_passages']} passages, mean {r['corpus_tokens']['mean_tokens']:.1f} tokens; "
                  f"sample of {r['n']}: mean {s['mean_tokens']:.1f} tokens, {s['gflop_per_passage']:.2f} GFLOP "
                  f"per passage ({s['gflop_per_passage_padded']:.2f} with batch padding); median cosine "
                  f"fp32 vs int8 {r['median_cosine_fp32_int8']:.4f}; float32 torch vs ONNX Runtime: largest "
                  f"difference {r['max_abs_diff_fp32_torch_onnx']:.1e}")
            print(f"float32 matmul GFLOP/s by threads (the limit: the faster): {r['matmul_gflops']}")
            print(table(r["rows"], f"embedding {r['n']} passages, batches of at most {r['batch_size']} passages and "
                               f"{r['batch_tokens']} tokens, median of {r['rounds']}"))
        elif step == "batching":
            print(table(r["rows"], f"embedding {r['n']} passages (float32) by padded tokens per batch, median of "
                                   f"{r['rounds']}; largest difference to batches of passages {r['max_abs_diff_vs_batch_of_passages']:.1e}"))
        else:
            print(json.dumps(r, indent=2))
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
