"""Built-in data: the packaged Wikipedia summaries corpus, FanOutQA dev joined with it, and converters."""

from unirag.data.fanoutqa import FanOutLeaf, FanOutQuestion, fanoutqa_dev, fanoutqa_leaves, fanoutqa_split
from unirag.data.wiki import wiki_passages, wiki_summaries

__all__ = [
    "FanOutLeaf",
    "FanOutQuestion",
    "fanoutqa_dev",
    "fanoutqa_leaves",
    "fanoutqa_split",
    "wiki_passages",
    "wiki_summaries",
]
