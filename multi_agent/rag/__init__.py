"""Knowledge base: loaders, jieba BM25 + dense hybrid retrieval, RRF, cross-encoder rerank,
a persistent incremental index (FAISS or Milvus), and a LangChain retriever.

    from multi_agent.rag import KnowledgeBase, RagConfig
    kb = KnowledgeBase(RagConfig(kb_dir=path)); kb.index(); kb.search("如何微调?")
"""

from .config import RagConfig
from .kb import KnowledgeBase
from .schema import Chunk, Hit, IndexReport

__all__ = ["Chunk", "Hit", "IndexReport", "KnowledgeBase", "RagConfig"]
