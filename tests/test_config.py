"""Settings: flat env names, nested layers, osprag.toml, validation, remote safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from osprag import ConfigError, LayerNotFound, load_settings
from osprag.config import settings_markdown


def test_defaults() -> None:
    s = load_settings()
    assert s.effective_storage == "embedded"
    assert s.data_dir == Path("osp-data")
    assert (s.space, s.hnsw_m, s.ef_construction, s.ef_search) == ("cosine", 16, 200, 100)
    assert s.ordered_layers() == ["kern", "erweitert"]
    assert s.layer("kern").collection_name("kern") == "osp_kern"
    assert s.layer("erweitert").default_access_level == 4
    assert s.embedding_model == "all-MiniLM-L6-v2"


def test_flat_env_and_nested_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSP_DATA_DIR", "/tmp/x")
    monkeypatch.setenv("OSP_EF_SEARCH", "64")
    monkeypatch.setenv("OSP_CHROMA_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("OSP_LAYERS__KERN__WEIGHT", "1.5")
    s = load_settings()
    assert s.data_dir == Path("/tmp/x")
    assert s.ef_search == 64
    assert s.effective_storage == "server"
    assert s.layers["kern"].weight == 1.5


def test_toml_file(tmp_path: Path) -> None:
    (tmp_path / "osprag.toml").write_text(
        'space = "ip"\nembedding_batch_size = 8\n'
        '[layers.kern]\ndescription = "Kern"\n'
        '[layers.archiv]\ndescription = "Altes"\npriority = 5\ndefault_access_level = 2\n'
    )
    s = load_settings()
    assert s.space == "ip"
    assert s.embedding_batch_size == 8
    assert s.ordered_layers() == ["kern", "archiv"]
    assert s.layer("archiv").default_access_level == 2


def test_env_wins_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "osprag.toml").write_text('space = "ip"\n')
    monkeypatch.setenv("OSP_SPACE", "l2")
    assert load_settings().space == "l2"


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("OSP_SPACE", "manhattan", "space"),
        ("OSP_HNSW_M", "1", "hnsw_m"),
        ("OSP_CHROMA_URL", "ftp://host", "chroma_url"),
        ("OSP_STORAGE", "server", "OSP_CHROMA_URL"),
        ("OSP_LAYERS__KERN__DEFAULT_ACCESS_LEVEL", "7", "default_access_level"),
    ],
)
def test_invalid_settings_one_line(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_remote_without_tls_and_auth_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(chroma_url="http://10.1.2.3:8000")
    assert "OSP_ALLOW_INSECURE_REMOTE" in str(info.value)
    with pytest.raises(ConfigError):
        load_settings(chroma_url="https://chroma.example:443")  # TLS but no auth
    ok = load_settings(chroma_url="https://chroma.example:443", chroma_token="s3cret")
    assert "s3cret" not in repr(ok)
    assert load_settings(chroma_url="http://10.1.2.3:8000", allow_insecure_remote=True)
    assert load_settings(chroma_url="http://localhost:8000")


def test_unknown_layer() -> None:
    with pytest.raises(LayerNotFound) as info:
        load_settings().layer("archiv")
    assert "kern, erweitert" in str(info.value)


def test_readme_settings_table_is_generated() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert settings_markdown() in readme, "regenerate with: osp config --markdown"
