"""One error tree for every surface of osprag.

Each class carries a stable ``code`` (the JSON ``error`` field of the HTTP API and the
``--json`` error shape of the CLI), an ``http_status`` and a CLI ``exit_code``. Surfaces map
errors once (one CLI handler, one HTTP handler) instead of catching case by case::

    OspragError
    ├── ConfigError                 settings invalid or contradictory          exit 3 / 400
    ├── InvalidInput                caller passed something unusable           exit 4 / 400
    │   ├── InvalidFilter           bad where / where_document                 exit 4 / 400
    │   ├── InvalidMetadata         metadata fails the schema                  exit 4 / 400
    │   ├── DimensionMismatch       vector length differs from the layer       exit 4 / 400
    │   ├── DuplicateId             ids repeated in a call or already stored   exit 4 / 409
    │   ├── ExportInvalid           layer file unreadable, truncated or bad    exit 4 / 422
    │   └── BackupInvalid           archive fails verification (hash, paths)   exit 4 / 422
    ├── NotFound                                                               exit 5 / 404
    │   └── LayerNotFound
    ├── AccessDenied                principal lacks role or clearance          exit 6 / 403
    │   └── Unauthorized            no token, or an unknown one (HTTP)         exit 6 / 401
    ├── RateLimited                 too many requests for one token (HTTP)     exit 10 / 429
    ├── TooLarge                    upload above the configured limit           exit 4 / 413
    ├── StoreError                                                             exit 7 / 500
    │   ├── StoreUnavailable        chroma server down / data dir unusable     exit 7 / 503
    │   ├── StoreLocked             another process owns the data dir          exit 8 / 409
    │   └── NotWritable             data dir cannot be written                 exit 7 / 500
    ├── EmbeddingError                                                         exit 9 / 500
    │   ├── ModelNotFound           model name/path cannot be loaded offline   exit 9 / 500
    │   └── EmbeddingMismatch       layer was built with another model         exit 9 / 409
    ├── IngestError                 one file could not be read (others go on)  exit 1 / 422
    └── LLMError                    the answer LLM refused the request         exit 11 / 502
        └── LLMUnavailable          LLM down, timed out or failing (5xx)       exit 11 / 503

Exit 1 is reserved for partial failure (some items failed, the rest done) and 2 for usage
errors reported by the CLI parser.
"""

from __future__ import annotations


class OspragError(Exception):
    """Base of every error osprag raises on purpose."""

    code: str = "osprag_error"
    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} — {hint}")

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.code, "message": str(self)}
        return body


class ConfigError(OspragError):
    code = "config_error"
    http_status = 400
    exit_code = 3


class InvalidInput(OspragError):
    code = "invalid_input"
    http_status = 400
    exit_code = 4


class InvalidFilter(InvalidInput):
    code = "invalid_filter"


class InvalidMetadata(InvalidInput):
    code = "invalid_metadata"


class DimensionMismatch(InvalidInput):
    code = "dimension_mismatch"


class DuplicateId(InvalidInput):
    code = "duplicate_id"
    http_status = 409


class ExportInvalid(InvalidInput):
    """A layer export file that cannot be read (the message names the file and line)."""

    code = "export_invalid"
    http_status = 422


class BackupInvalid(InvalidInput):
    """An archive that fails verification; nothing was restored."""

    code = "backup_invalid"
    http_status = 422


class NotFound(OspragError):
    code = "not_found"
    http_status = 404
    exit_code = 5


class LayerNotFound(NotFound):
    code = "layer_not_found"


class AccessDenied(OspragError):
    code = "access_denied"
    http_status = 403
    exit_code = 6


class Unauthorized(AccessDenied):
    """No credentials or unknown ones: 401, so clients know to (re)authenticate."""

    code = "unauthorized"
    http_status = 401


class RateLimited(OspragError):
    code = "rate_limited"
    http_status = 429
    exit_code = 10

    def __init__(self, message: str, *, retry_after: float = 1.0, hint: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint)


class TooLarge(InvalidInput):
    code = "too_large"
    http_status = 413


class StoreError(OspragError):
    code = "store_error"
    http_status = 500
    exit_code = 7


class StoreUnavailable(StoreError):
    code = "store_unavailable"
    http_status = 503


class NotWritable(StoreError):
    code = "not_writable"


class StoreLocked(StoreError):
    code = "store_locked"
    http_status = 409
    exit_code = 8


class EmbeddingError(OspragError):
    code = "embedding_error"
    http_status = 500
    exit_code = 9


class ModelNotFound(EmbeddingError):
    code = "model_not_found"


class EmbeddingMismatch(EmbeddingError):
    code = "embedding_mismatch"
    http_status = 409


class IngestError(OspragError):
    """A file that cannot be ingested; carries the path so reports can name it."""

    code = "ingest_error"
    http_status = 422
    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint)


class LLMError(OspragError):
    """The chat model answered, but not usably (4xx, malformed body); retrying will not help."""

    code = "llm_error"
    http_status = 502
    exit_code = 11


class LLMUnavailable(LLMError):
    """The chat model could not be reached in time (connect error, timeout, 5xx) after retries."""

    code = "llm_unavailable"
    http_status = 503


ALL_ERRORS: tuple[type[OspragError], ...] = (
    OspragError,
    ConfigError,
    InvalidInput,
    InvalidFilter,
    InvalidMetadata,
    DimensionMismatch,
    DuplicateId,
    ExportInvalid,
    BackupInvalid,
    NotFound,
    LayerNotFound,
    AccessDenied,
    Unauthorized,
    RateLimited,
    TooLarge,
    StoreError,
    StoreUnavailable,
    NotWritable,
    StoreLocked,
    EmbeddingError,
    ModelNotFound,
    EmbeddingMismatch,
    IngestError,
    LLMError,
    LLMUnavailable,
)
