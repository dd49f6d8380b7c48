"""Retrievers for LlamaIndex (``osprag[llamaindex]``) and LangChain (``osprag[langchain]``).

Each adapter lives in its own module and imports its framework only when imported itself, so
``import osprag`` never pulls either. Both search through ``KnowledgeBase.query`` (local, with a
principal) or ``RemoteKnowledgeBase.query`` (a token): clearance, hybrid search over both layers
and the write log stay in force. There is deliberately no way to get the raw Chroma collection.
"""
