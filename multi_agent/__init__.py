"""Local multi-agent desktop assistant: RAG knowledge base, agents, Qt GUI, MCP tools."""
