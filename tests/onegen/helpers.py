"""Test helpers: a tiny BPE tokenizer with a ChatML template, a tiny random Llama, documents and
schema-valid examples (no downloads)."""

from __future__ import annotations

from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT = [
    "Who directed the film Alien? Ridley Scott directed Alien in 1979.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "Mount Everest is the highest mountain on Earth, in the Himalayas.",
    "Which river flows through Cairo? The Nile flows through Egypt.",
    "retrieve a relevant document for the question so far summary of this document for retrieval",
    "link the entity mention just written summary of this entity for linking passage",
    "Python is a programming language. Paris. France. Alien (film). Nile. Everest.",
]


def make_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained on a few sentences, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


def make_llama(vocab: int, tie: bool = True, seed: int = 0) -> Any:
    """A 2-layer, hidden-32 random LlamaForCausalLM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tie, pad_token_id=1, eos_token_id=1, bos_token_id=0)
    return LlamaForCausalLM(cfg).eval()


DOCS = {
    "Alien (film)": "Alien (film). Alien is a 1979 film directed by Ridley Scott.",
    "Paris": "Paris. Paris is the capital of France; the Eiffel Tower is there.",
    "Nile": "Nile. The Nile flows through Egypt and Cairo.",
    "Mount Everest": "Mount Everest. The highest mountain on Earth, in the Himalayas.",
    "Python": "Python. Python is a programming language.",
}


def example_rows() -> list[dict]:
    """Three schema-valid examples over :data:`DOCS` (one multi-hop, two single-hop)."""
    return [
        {"id": "a", "messages": [
            {"role": "user", "content": "Who directed Alien, and where is the Eiffel Tower?"},
            {"role": "assistant", "content": "Who directed Alien?[RQ]<passage>Alien is a 1979 film.</passage>"
                                             "Ridley Scott. Where is the Eiffel Tower?[RQ]<passage>Paris is the "
                                             "capital.</passage>Paris"}],
         "retrievals": [{"positives": ["Alien (film)"], "negatives": ["Python"]},
                        {"positives": ["Paris"], "negatives": ["Nile"]}]},
        {"id": "b", "messages": [
            {"role": "user", "content": "Which river flows through Cairo?"},
            {"role": "assistant", "content": "[RQ]<passage>The Nile flows through Egypt.</passage>The Nile"}],
         "retrievals": [{"positives": ["Nile"], "negatives": ["Mount Everest"]}]},
        {"id": "c", "messages": [
            {"role": "user", "content": "What is the highest mountain?"},
            {"role": "assistant", "content": "[RQ]<passage>Everest.</passage>Mount Everest"}],
         "retrievals": [{"positives": ["Mount Everest"]}]},
    ]
