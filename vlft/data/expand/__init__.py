"""Data expansion: documents and web pages -> image-caption and Q&A training data and knowledge-base
entries, in one step (``expand_data.py``; docs/data-expansion.md).

    sources   files, folders, URLs (robots.txt, rate limit, size cap, crawl) -> local documents
    extract   text with headings/pages, figures with the document's captions
    generate  none | local Qwen-VL (batched) | OpenAI-compatible URL (concurrent), cached
    curate    length, language, support, exact and near duplicates
    export    captions.csv, train.json, provenance.jsonl; append to training; knowledge base
    pipeline  ExpandConfig, Expander (collect / save, progress callback), run_expand
"""

from .pipeline import ExpandConfig, Expander, ExpandReport, ExpandResult, run_expand

__all__ = ["ExpandConfig", "ExpandReport", "ExpandResult", "Expander", "run_expand"]
