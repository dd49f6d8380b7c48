"""The parser process: same results as inline, limits enforced, survives what kills it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osprag.errors import IngestError
from osprag.ingest.worker import Parser, parse_file, parse_file_inline
from tests.fixtures.make_bad_files import EXPECTED, make_bad_files

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "osp-corpus"
SAMPLES = [
    CORPUS / "kern" / "QM_HB_QM-Handbuch.pdf",
    CORPUS / "kern" / "QM_PPF_PPAP-PPF-Vorlage.docx",
    CORPUS / "erweitert" / "QM_AUD_Internes-Auditprogramm-2025.xlsx",
    CORPUS / "erweitert" / "QM_MR_Managementbewertung-2024.pptx",
    CORPUS / "erweitert" / "PMU_KAL_Kalibrierregister.csv",
    CORPUS / "kern" / "QM_SPC_SPC-und-Regelkarten.html",
    CORPUS / "kern" / "PRD_CRM_Auszugskraftpruefung.txt",
    CORPUS / "kern" / "QM_REK_8D-Reklamationsprozess.md",
]


@pytest.fixture(scope="module")
def parser() -> Iterator[Parser]:
    with Parser(start=True) as shared:
        yield shared


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


def test_results_equal_the_inline_loader(parser: Parser) -> None:
    for path in SAMPLES:
        assert parser.parse(path) == parse_file_inline(path), path.name


def test_one_process_serves_many_files(parser: Parser) -> None:
    starts = parser.starts
    files = sorted(p for p in CORPUS.glob("*/*") if p.suffix != ".meta" and p.is_file())
    begin = time.perf_counter()
    for path in files:
        parser.parse(path)
    elapsed = time.perf_counter() - begin
    assert parser.starts == starts
    assert elapsed < 30, f"{len(files)} corpus files took {elapsed:.1f}s"
    assert parser.startup_seconds and parser.startup_seconds[0] < 20


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=str)
def test_bad_files_give_a_clear_error_through_the_process(
    parser: Parser, bad_files: dict[str, Path], name: str
) -> None:
    path = bad_files[name]
    if name == "unreadable.md" and os.access(path, os.R_OK):
        pytest.skip("running as root: chmod 000 does not stop reading")
    if name == "partly-scanned.pdf":
        assert EXPECTED[name] in parser.parse(path).warnings
        return
    with pytest.raises(IngestError) as info:
        parser.parse(path)
    assert EXPECTED[name] in str(info.value)
    assert info.value.path == str(path)


def test_bad_files_do_not_restart_the_process(parser: Parser, bad_files: dict[str, Path]) -> None:
    starts = parser.starts
    for path in bad_files.values():
        try:
            parser.parse(path)
        except IngestError:
            pass
    assert parser.starts == starts


def test_too_large_is_refused_without_starting_a_process(bad_files: dict[str, Path]) -> None:
    with Parser(max_bytes=1024) as small:
        with pytest.raises(IngestError, match=r"file too large \(60.0 MB > limit 0 MB\)"):
            small.parse(bad_files["too-large.txt"])
        with pytest.raises(IngestError, match="unsupported format .xyz"):
            small.parse(bad_files["drawing.xyz"])
        assert small.starts == 0


def test_time_limit_kills_and_the_next_file_gets_a_new_process(tmp_path: Path) -> None:
    slow = tmp_path / "gross.csv"
    row = ";".join(f"Prüfmittel {i}" for i in range(20)) + "\n"
    slow.write_text(row * 60_000, encoding="utf-8")  # ~17 MB: seconds of parsing
    with Parser(max_seconds=0.3) as limited:
        begin = time.perf_counter()
        with pytest.raises(IngestError, match=r"exceeded time limit \(0.3 s\)"):
            limited.parse(slow)
        assert time.perf_counter() - begin < 5
        assert limited.parse(SAMPLES[-1]).title  # a fresh process takes the next file
        assert limited.starts == 2


def test_memory_limit_is_an_error_not_a_dead_parent(tmp_path: Path) -> None:
    big = tmp_path / "riesig.txt"
    line = "Crimphöhe messen und dokumentieren, Auszugskraft prüfen.\n"
    big.write_text(line * 700_000, encoding="utf-8")  # ~40 MB: several copies exceed 160 MB
    with Parser(max_memory_mb=160, max_seconds=30) as limited:
        with pytest.raises(IngestError, match=r"exceeded memory limit \(160 MB\)"):
            limited.parse(big)
        assert limited.parse(SAMPLES[-1]).title
        assert limited.starts == 2


def test_zip_bomb_through_the_process(bad_files: dict[str, Path]) -> None:
    with pytest.raises(IngestError, match="zip bomb"):
        parse_file(
            bad_files["zip-bomb.docx"], max_bytes=50 * 2**20, max_seconds=30, max_memory_mb=512
        )


def test_inline_applies_the_size_limit(bad_files: dict[str, Path]) -> None:
    with pytest.raises(IngestError, match="file too large"):
        parse_file_inline(bad_files["too-large.txt"])


def test_closed_parser_refuses_work() -> None:
    parser = Parser()
    parser.close()
    with pytest.raises(RuntimeError):
        parser.parse(SAMPLES[-1])
