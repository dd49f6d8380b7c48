"""Ingestion: files → blocks (loaders) → chunks (chunking) → layer records (sync)."""
