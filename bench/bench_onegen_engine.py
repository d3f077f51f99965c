"""Speed of the OneGen engine on SmolLM2-135M-Instruct (2-core CPU friendly).

Measures mechanics, not answer quality: the OneGen tokens are added to the *untrained* base
model and the query token is forced at chosen generation steps (``force_query_at``); passages
come from a OneGen index that the same model embedded (document token). Greedy decoding.

(a) engine with k retrievals vs the same decoding with the same passages inserted at the same
    steps by teacher forcing (a scripted index: no query vector search);
(b) vs the reference code's way on a 3-hop question: per query token, re-tokenise the decoded
    text and run a full forward for the query vector, re-encode the candidate documents, then
    call generation again on the whole new text (no cache reuse);
(c) vs a two-model pipeline: all-MiniLM-L6-v2 embeds the text generated since the last hop, a
    MiniLM index is searched, the prompt is rebuilt and prefilled per hop; it inserts the
    passages OneGen chose so both produce the same answer tokens;
(d) a batch of 8 prompts vs the same 8 one at a time.
Sweeps: prompt length and number of retrievals. Prints a table and writes JSON.

    python bench/bench_onegen_engine.py [--docs 300] [--quick] [--json bench/results/onegen_engine.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unirag.models.decoding import EngineModel, Decoder, SamplingParams, split_lm

MAX_PASSAGE = 96


def setup(n_docs: int, dtype: str = "float32"):
    """SmolLM2 + OneGen tokens (untrained), a OneGen index over the first ``n_docs`` summaries (embedded
    in float32); the model then decodes in ``dtype``."""
    from unirag.data import wiki_passages
    from unirag.models.generator import load_causal_lm
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.docindex import build_onegen_index, open_onegen_index
    from unirag.onegen.tokens import add_special_tokens

    lm, tok = load_causal_lm("smollm2-135m-instruct")
    cfg = OneGenConfig()
    ids = add_special_tokens(lm, tok, cfg)
    em = EngineModel(lm, tok, ids["query"], cfg.passage_start, cfg.passage_end,
                     name="smollm2-135m-instruct+onegen-tokens-untrained", document_token_id=ids["document"])
    from unirag.index.folder import IndexFolder

    folder = IndexFolder.cached(f"bench-onegen-untrained-wiki{n_docs}")
    if not folder.exists():
        build_onegen_index(wiki_passages(limit=n_docs), folder.path, em, progress=True)
    lm.to(getattr(torch, dtype))
    return em, open_onegen_index(folder.path, em, model_name=em.name)


class TimedIndex:
    """Wraps a retriever and adds up the seconds spent in ``search_vectors`` (the in-loop retrieval cost)."""

    def __init__(self, index):
        self.index, self.store, self.seconds = index, index.store, 0.0

    def search_vectors(self, vectors, k=5, exclude=None):
        t = time.perf_counter()
        out = self.index.search_vectors(vectors, k, exclude=exclude)
        self.seconds += time.perf_counter() - t
        return out


class ScriptedIndex:
    """Teacher forcing: returns pre-chosen rows in order, without looking at the query vector."""

    def __init__(self, index, rows_per_call: list[int]):
        self.store, self._rows, self._i = index.store, list(rows_per_call), 0

    def search_vectors(self, vectors, k=5, exclude=None):
        from unirag.retrieval.base import SearchResult

        row = self._rows[self._i % len(self._rows)]
        self._i += 1
        rows = np.array([[row]], dtype=np.int64)
        return SearchResult([self.store.ids(rows[0])], np.array([[1.0]], dtype=np.float32), rows, store=self.store)


CPU_SECONDS: list[float] = []  # process CPU time of the last ``timed`` call (best run)


def timed(fn, repeats: int):
    """(best wall seconds, last result); the best process CPU seconds go to ``CPU_SECONDS[-1]``.

    On a shared machine wall time swings with other jobs; CPU time of this process does not, so
    ratios (overhead, speed-ups) are computed on CPU time and wall times are reported beside."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
    CPU_SECONDS.append(cpu)
    return best, out


def cpu() -> float:
    """CPU seconds of the last ``timed`` call."""
    return CPU_SECONDS[-1]


def prompt_ids(em, question: str, context_tokens: int, filler: list[int]) -> list[int]:
    """Chat prompt of ``question``, preceded by ``context_tokens`` tokens of filler text."""
    tok = em.tokenizer
    body = tok.decode(filler[:context_tokens]) + "\n\n" + question if context_tokens else question
    text = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def schedule(k: int, gap: int) -> tuple[int, ...]:
    return tuple(gap * (i + 1) for i in range(k))


def reference_way(em, index, ids: list[int], params: SamplingParams, candidates: int):
    """The public reference loop: generate, and at each query token re-tokenise the decoded text,
    run a full forward for the query vector, re-encode ``candidates`` documents, re-prefill."""
    decoder, _ = split_lm(em.lm)
    tok = em.tokenizer
    plain = Decoder(em, None)
    text = tok.decode(ids)
    generated: list[int] = []
    inserted: set[int] = set()
    steps = list(params.force_query_at) + [params.max_new_tokens]
    for hop, stop in enumerate(steps):
        n = stop - len(generated)
        if n > 0:
            seg = plain.generate([tok(text, add_special_tokens=False)["input_ids"]],
                                 SamplingParams(max_new_tokens=n, max_passage_tokens=MAX_PASSAGE))[0]
            generated += seg.token_ids
            text += tok.decode(seg.token_ids)
        if hop == len(steps) - 1 or len(generated) >= params.max_new_tokens:
            break
        generated.append(em.query_token_id)
        text += tok.convert_ids_to_tokens(em.query_token_id)
        full = tok(text, add_special_tokens=False)["input_ids"]  # re-tokenise the decoded text
        with torch.inference_mode():
            h = decoder(input_ids=torch.tensor([full])).last_hidden_state[0, -1]
        q = em.vectors(h[None]).numpy()
        rows = index.search_vectors(q, max(candidates, 1), exclude=[inserted]).rows
        pool = [int(r) for r in rows[0] if r >= 0]
        best = pool[0]
        if candidates:  # the reference re-encodes its candidate documents at every retrieval
            from unirag.onegen.docindex import OneGenEncoder

            docs = OneGenEncoder(em, max_tokens=MAX_PASSAGE).encode([index.store[r].contents for r in pool],
                                                                    batch_size=len(pool))
            best = pool[int(np.argmax(docs @ q[0]))]
        inserted.add(best)
        body = tok.decode(tok(index.store[best].contents, add_special_tokens=False)["input_ids"][:MAX_PASSAGE])
        text += em.passage_open + body + em.passage_close
    return generated


def two_model_pipeline(em, encoder, mini, index, ids: list[int], params: SamplingParams, rows: list[int]):
    """Separate encoder per hop + prompt rebuilt and prefilled per hop (inserting ``rows``)."""
    from unirag.models.decoding import passage_ids

    tok = em.tokenizer
    plain = Decoder(em, None)
    seq, generated, since = list(ids), [], tok.decode(ids)
    steps = list(params.force_query_at) + [params.max_new_tokens]
    for hop, stop in enumerate(steps):
        n = stop - len(generated)
        if n > 0:
            seg = plain.generate([seq], SamplingParams(max_new_tokens=n))[0]
            generated += seg.token_ids
            seq += seg.token_ids
            since = tok.decode(seg.token_ids) or since
        if hop == len(steps) - 1:
            break
        q = encoder.encode([since])
        mini.search_vectors(q, 5)  # the pipeline's own retrieval cost
        generated.append(em.query_token_id)
        seq += [em.query_token_id] + passage_ids(em, index.store[rows[hop]].contents, MAX_PASSAGE)
    return generated


def three_hop(em, index, engine, encoder, mini, ids, gap, rep, candidates) -> dict:
    """(b) and (c) on one prompt: OneGen vs the reference loop vs the two-model pipeline."""
    p = SamplingParams(max_new_tokens=4 * gap + 8, force_query_at=schedule(3, gap), max_retrievals=3,
                       max_passage_tokens=MAX_PASSAGE)
    _, out = timed(lambda: engine.generate([ids], p)[0], rep)
    t_og = cpu()
    rows = [index.store.row_of(i) for i in out.sources]
    _, gen_ref = timed(lambda: reference_way(em, index, ids, p, candidates), 1)
    t_ref = cpu()
    _, _ = timed(lambda: reference_way(em, index, ids, p, 0), 1)
    t_ref0 = cpu()
    _, gen_pipe = timed(lambda: two_model_pipeline(em, encoder, mini, index, ids, p, rows), rep)
    t_pipe = cpu()
    return {"prompt_tokens": len(ids), "new_tokens": len(out.token_ids), "sources": out.sources,
            "onegen_cpu_s": t_og, "reference_cpu_s": t_ref, "reference_candidates": candidates,
            "reference_no_candidates_cpu_s": t_ref0, "pipeline_cpu_s": t_pipe,
            "speedup_vs_reference": t_ref / t_og, "speedup_vs_reference_no_candidates": t_ref0 / t_og,
            "speedup_vs_pipeline": t_pipe / t_og, "same_tokens_reference": gen_ref == out.token_ids,
            "same_tokens_pipeline": gen_pipe == out.token_ids}


def batch_settings(gap: int) -> list[tuple[str, list[SamplingParams]]]:
    """(d): no retrieval; 2 retrievals at the same steps; staggered steps; long answers."""
    def sp(n: int, force: tuple[int, ...], k: int = 2) -> SamplingParams:
        return SamplingParams(max_new_tokens=n, force_query_at=force, max_retrievals=k, max_passage_tokens=MAX_PASSAGE)

    return [("no retrieval, 64 new tokens", [sp(64, (), 0)] * 8),
            ("2 retrievals at the same steps, 32 new tokens", [sp(3 * gap + 8, schedule(2, gap))] * 8),
            ("2 retrievals at staggered steps, 32 new tokens",
             [sp(3 * gap + 8, (2 + i, 2 * gap + i)) for i in range(8)]),
            ("2 retrievals at the same steps, 128 new tokens", [sp(128, schedule(2, gap))] * 8)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--json", default="bench/results/onegen_engine.json")
    ap.add_argument("--parts", default="sweep,hops,batch", help="comma-separated: sweep, hops, batch")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights and activations while decoding (bfloat16: for CPUs that multiply it natively)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU time measures work, not OpenMP spin-waiting on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    em, index = setup(args.docs, args.dtype)
    from unirag.data import fanoutqa_split

    _, heldout = fanoutqa_split()
    questions = [q.question for q in heldout]
    three_hop_q = next(q for q in heldout if len(q.leaves) >= 3).question
    parts = set(args.parts.split(","))
    filler = em.tokenizer(" ".join(index.store[i].contents for i in range(40)), add_special_tokens=False)["input_ids"]
    engine = Decoder(em, index)
    rep = args.repeats
    gap, lengths, ks = 8, ([0, 256] if args.quick else [0, 256, 768]), ([1, 3] if args.quick else [0, 1, 4])
    results: dict = {"model": em.name, "docs": len(index), "device": f"cpu, {torch.get_num_threads()} torch thread(s)",
                     "dtype": args.dtype,
                     "note": "untrained base model with the OneGen tokens added; the query token is forced at "
                             "fixed steps (mechanics and speed only, not answer quality)",
                     "sweep": [], "three_hop": [], "batch": []}
    print(f"# {results['note']}\n# model {em.name}, {len(index)} docs, greedy, passage <= {MAX_PASSAGE} tokens, "
          f"query token every {gap} generated tokens", flush=True)
    print("reference column: re-tokenise + full forward per query vector + re-prefill (candidate re-encoding "
          "left out here: a conservative lower bound; the 3-hop row includes it)")
    print("times are process CPU seconds (best of runs); ratios use them; wall seconds are in the JSON")
    print(f"{'prompt':>6} {'k':>2} {'new':>4} | {'onegen':>8} {'forced':>8} {'overhead':>8} {'search':>7} | "
          f"{'reference':>9} {'speedup':>7}")
    for L in lengths if "sweep" in parts else []:
        for k in ks:
            ids = prompt_ids(em, three_hop_q, L, filler)
            p = SamplingParams(max_new_tokens=gap * (k + 1) + 8, force_query_at=schedule(k, gap), max_retrievals=k,
                               max_passage_tokens=MAX_PASSAGE)
            timed_index = TimedIndex(index)
            w_og, out = timed(lambda: Decoder(em, timed_index).generate([ids], p)[0], rep)
            c_og = cpu()
            rows = [index.store.row_of(i) for i in out.sources]
            forced = Decoder(em, ScriptedIndex(index, rows) if rows else None)
            w_tf, out_tf = timed(lambda: forced.generate([ids], p)[0], rep)
            c_tf = cpu()
            w_og2, _ = timed(lambda: Decoder(em, index).generate([ids], p)[0], rep)  # interleaved re-run
            w_og, c_og = min(w_og, w_og2), min(c_og, cpu())
            search_share = timed_index.seconds / rep / w_og
            w_ref, gen_ref = timed(lambda: reference_way(em, index, ids, p, 0), 1) if k else (w_tf, [])
            c_ref = cpu() if k else c_tf
            t_og, t_tf, t_ref = c_og, c_tf, c_ref
            row = {"prompt_tokens": len(ids), "retrievals": k, "new_tokens": len(out.token_ids),
                   "onegen_cpu_s": c_og, "teacher_forced_cpu_s": c_tf, "reference_cpu_s": c_ref,
                   "onegen_wall_s": w_og, "teacher_forced_wall_s": w_tf, "reference_wall_s": w_ref,
                   "overhead": t_og / t_tf - 1, "search_share": search_share,
                   "speedup_vs_reference": t_ref / t_og,
                   "same_tokens_forced": out.token_ids == out_tf.token_ids,
                   "same_tokens_reference": gen_ref == out.token_ids if k else None}
            results["sweep"].append(row)
            print(f"{len(ids):>6} {k:>2} {len(out.token_ids):>4} | {t_og:8.2f} {t_tf:8.2f} {row['overhead']:+8.1%} "
                  f"{search_share:7.2%} | "
                  f"{t_ref:9.2f} {row['speedup_vs_reference']:6.1f}x", flush=True)
    if "hops" in parts:  # (b, c) the 3-hop question with 3 retrievals, short and long context
        from unirag.models.encoder import Encoder
        from unirag.retrieval import DenseRetriever
        from unirag.retrieval.build import build_index

        from unirag.index.folder import IndexFolder

        mini = IndexFolder.cached(f"bench-minilm-wiki{args.docs}")
        mini_dir = mini.path
        if not mini.exists():
            from unirag.data import wiki_passages

            build_index(wiki_passages(limit=args.docs), mini_dir, bm25=False, progress=False)
        encoder = Encoder.from_pretrained("all-minilm-l6-v2")
        mini = DenseRetriever.load(mini_dir, encoder=encoder)
        results["three_hop"], results["three_hop_question"] = [], three_hop_q
        for L in (0, 768):
            h = three_hop(em, index, engine, encoder, mini, prompt_ids(em, three_hop_q, L, filler), gap, rep,
                          args.candidates)
            results["three_hop"].append(h)
            print(f"3-hop, 3 retrievals, prompt {h['prompt_tokens']}, {h['new_tokens']} new tokens (CPU s): onegen "
                  f"{h['onegen_cpu_s']:.2f} | reference {h['reference_cpu_s']:.2f} with {args.candidates} candidates "
                  f"re-encoded ({h['speedup_vs_reference']:.1f}x), {h['reference_no_candidates_cpu_s']:.2f} without "
                  f"({h['speedup_vs_reference_no_candidates']:.1f}x) | two-model pipeline {h['pipeline_cpu_s']:.2f} "
                  f"({h['speedup_vs_pipeline']:.1f}x, same tokens {h['same_tokens_pipeline']})", flush=True)
    if "batch" in parts:  # (d) batch of 8 vs the same 8 prompts one at a time
        batch = [prompt_ids(em, q, 0, filler) for q in questions[:8]]
        results["batch"] = []
        for label, per_row in batch_settings(gap):
            w_b, outs = timed(lambda: engine.generate(batch, per_row), 1)
            t_b = cpu()
            w_s, singles = timed(lambda: [engine.generate([b], p)[0] for b, p in zip(batch, per_row)], 1)
            t_s = cpu()
            rowwise = Decoder(em, index, group_prefill=0)   # each passage prefill its own forward
            w_r, outs_r = timed(lambda: rowwise.generate(batch, per_row), 1)
            t_r = cpu()
            n_tok = sum(len(o.token_ids) for o in outs)
            row = {"setting": label, "prompts": 8, "new_tokens": n_tok, "retrievals": sum(len(o.trace) for o in outs),
                   "batch_cpu_s": t_b, "single_cpu_s": t_s, "batch_wall_s": w_b, "single_wall_s": w_s,
                   "batch_rowwise_prefill_cpu_s": t_r, "batch_rowwise_prefill_wall_s": w_r,
                   "batch_tok_per_cpu_s": n_tok / t_b, "single_tok_per_cpu_s": n_tok / t_s, "speedup": t_s / t_b,
                   "speedup_rowwise_prefill": t_s / t_r,
                   "same_tokens": [o.token_ids for o in outs] == [o.token_ids for o in singles]
                   == [o.token_ids for o in outs_r],
                   "same_rows": sum(o.token_ids == s.token_ids for o, s in zip(outs, singles))}
            results["batch"].append(row)
            print(f"batch of 8, {label}: {row['batch_tok_per_cpu_s']:.1f} tok per CPU s vs one at a time "
                  f"{row['single_tok_per_cpu_s']:.1f}: {row['speedup']:.1f}x (row-by-row passage prefill "
                  f"{row['speedup_rowwise_prefill']:.1f}x), same tokens {row['same_tokens']} "
                  f"({row['same_rows']} of 8 rows as one at a time)", flush=True)
    import faiss

    flat = faiss.IndexFlatIP(index.index.dim)  # search cost at full-corpus size (content-independent)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((10_033, index.index.dim)).astype(np.float32)
    flat.add(base / np.linalg.norm(base, axis=1, keepdims=True))
    t = time.perf_counter()
    for i in range(50):
        flat.search(base[i : i + 1], 6)
    results["flat_search_10k_ms"] = (time.perf_counter() - t) / 50 * 1000
    print(f"one query over a 10,033 x {index.index.dim} Flat index (random unit vectors): "
          f"{results['flat_search_10k_ms']:.2f} ms")
    ov = [r["overhead"] for r in results["sweep"] if r["retrievals"]]
    results["summary"] = {"median_retrieval_overhead": statistics.median(ov) if ov else None,
                          "max_retrieval_overhead": max(ov) if ov else None}
    if ov:
        print(f"retrieval overhead vs teacher forcing: median {statistics.median(ov):+.1%}, max {max(ov):+.1%}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
