"""The lexical leg of retrieval: German/English analysis, a persistent BM25 index over all
layers, and Chroma's ``where`` semantics in Python so both legs filter alike."""

from osprag.search.analysis import Analyzer, AnalyzerConfig, QueryTerms, detect_language
from osprag.search.lexical import LexicalHit, LexicalIndex
from osprag.search.where_eval import compile_where, matches

__all__ = [
    "Analyzer",
    "AnalyzerConfig",
    "LexicalHit",
    "LexicalIndex",
    "QueryTerms",
    "compile_where",
    "detect_language",
    "matches",
]
