"""The hybrid retriever as a LangChain retriever, so it plugs into chains."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class KnowledgeBaseRetriever(BaseRetriever):
    """Documents carry metadata: source, page, chunk_id, score, rank, start, end, scores."""

    kb: Any
    k: int = 5
    rerank: bool = True

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=h.text, id=h.chunk_id,
                         metadata={"source": h.source, "page": h.page, "chunk_id": h.chunk_id,
                                   "score": h.score, "rank": h.rank, "start": h.start, "end": h.end,
                                   "scores": h.scores})
                for h in self.kb.search(query, k=self.k, rerank=self.rerank)]
