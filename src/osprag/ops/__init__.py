"""Operations: backup archives, export/import, migration between stores, health checks.

Every operation is a function over a ``KnowledgeBase`` (or ``Settings``) returning a typed
report; ``cli_ops.py`` and the future server's admin API are thin adapters over them.
"""
