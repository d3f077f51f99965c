"""Built-in data: the packaged Wikipedia summaries corpus, FanOutQA dev joined with it, and converters."""

from unirag.data.qa import QAItem, load_qa_set, read_qa_jsonl
from unirag.data.fanoutqa import (FanOutLeaf, FanOutQuestion, fanoutqa_dev, fanoutqa_leaves, fanoutqa_qa,
                                  fanoutqa_split)
from unirag.data.wiki import wiki_passages, wiki_summaries

__all__ = [
    "FanOutLeaf",
    "FanOutQuestion",
    "QAItem",
    "fanoutqa_dev",
    "fanoutqa_leaves",
    "fanoutqa_qa",
    "fanoutqa_split",
    "load_qa_set",
    "read_qa_jsonl",
    "wiki_passages",
    "wiki_summaries",
]
