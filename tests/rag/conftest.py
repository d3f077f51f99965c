"""Tiny random models (BERT-like question encoder, BART-like seq2seq, Llama-like causal LM) and a
tiny index, built in fixtures: no downloads."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from unirag.corpus.passage import Passage  # noqa: E402

FACTS = [
    ("Paris", "Paris is the capital of France and sits on the Seine river"),
    ("Berlin", "Berlin is the capital of Germany and has many museums"),
    ("Rome", "Rome is the capital of Italy and was founded long ago"),
    ("Madrid", "Madrid is the capital of Spain and hosts a royal palace"),
    ("Lisbon", "Lisbon is the capital of Portugal near the Atlantic ocean"),
    ("Vienna", "Vienna is the capital of Austria known for music"),
    ("Oslo", "Oslo is the capital of Norway at the end of a fjord"),
    ("Dublin", "Dublin is the capital of Ireland on the river Liffey"),
    ("Athens", "Athens is the capital of Greece with an old acropolis"),
    ("Prague", "Prague is the capital of Czechia with a famous bridge"),
]
QUESTIONS = [("what is the capital of France", "Paris"), ("what is the capital of Germany", "Berlin"),
             ("what is the capital of Italy", "Rome"), ("what is the capital of Spain", "Madrid"),
             ("which city is near the Atlantic ocean", "Lisbon"), ("which capital is known for music", "Vienna")]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]"]


def passages(edit: dict[str, str] | None = None) -> list[Passage]:
    """The tiny corpus; ``edit`` replaces words (a corpus that disagrees on a fact)."""
    out = []
    for title, text in FACTS:
        for old, new in (edit or {}).items():
            text = text.replace(old, new)
        out.append(Passage(id=title, text=text, title=title))
    return out


def _vocab() -> dict[str, int]:
    words = set()
    for t, x in FACTS:
        words.update((t + " " + x).split())
    for q, a in QUESTIONS:
        words.update((q + " " + a).split())
    words.update(["/", "//", ".", "Passage:", "Question:", "Answer:", "Amsterdam", "Seville", "Porto"])
    words.update(f"w{i}" for i in range(40))
    return {w: i for i, w in enumerate(SPECIALS + sorted(words))}


def make_tokenizer(kind: str):
    """A real word-level fast tokenizer: ``seq2seq`` (<s> … </s>), ``causal`` (no specials), ``bert``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(_vocab(), unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if kind == "seq2seq":
        tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    elif kind == "bert":
        tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    return tok


def tiny_bart(seed: int = 0):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=len(_vocab()), d_model=32, encoder_layers=2, decoder_layers=2,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                     decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.3)
    return BartForConditionalGeneration(cfg).eval()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(_vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.3)
    return LlamaForCausalLM(cfg).eval()


def tiny_encoder(seed: int = 0):
    from transformers import BertConfig, BertModel

    from unirag.models.encoder import Encoder

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    return Encoder(BertModel(cfg).eval(), make_tokenizer("bert"), "tiny-bert", "mean", False, 64)


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory):
    """Two index folders over the tiny corpus built with the tiny encoder: the original and one
    where France's capital is Amsterdam."""
    from unirag.retrieval.build import build_index

    enc = tiny_encoder()
    root = tmp_path_factory.mktemp("idx")
    a = build_index(passages(), root / "a", encoder=enc, bm25=False, progress=False)
    b = build_index(passages({"Paris is": "Amsterdam is"}), root / "b", encoder=enc, bm25=False, progress=False)
    return a, b


def make_rag(kind: str, index, **cfg):
    """A RagModel over tiny random parts (``kind`` = seq2seq or causal)."""
    from unirag.rag.config import RagConfig
    from unirag.rag.model import RagModel

    gen = tiny_bart() if kind == "seq2seq" else tiny_llama()
    tok = make_tokenizer(kind)
    config = RagConfig(**{"n_docs": 3, "system_prompt": "", "max_answer_tokens": 8, **cfg})
    model = RagModel(tiny_encoder(), gen, tok, None, config)
    model.attach_index(index)
    return model
