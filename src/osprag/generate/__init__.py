"""Answers with checked citations: retrieval → prompt → OpenAI-compatible LLM → citation check.

``answer``/``answer_stream`` (answerer.py) are the entry points; ``condense`` turns a chat
conversation into a standalone question; ``LLMClient`` talks to the chat endpoint.
"""

from osprag.generate.answerer import Answer, AnswerEvent, Citation, answer, answer_stream
from osprag.generate.condense import condense, is_task_request
from osprag.generate.llm import LLMClient
from osprag.generate.render import source_line, sources_markdown

__all__ = [
    "Answer",
    "AnswerEvent",
    "Citation",
    "LLMClient",
    "answer",
    "answer_stream",
    "condense",
    "is_task_request",
    "source_line",
    "sources_markdown",
]
