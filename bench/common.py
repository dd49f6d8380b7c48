"""Helpers shared by benchmarks: the eval data location and docs/benchmarks.md sections."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("OSP_EVAL_DIR", ROOT.parent / "shared" / "eval"))
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nWritten by the scripts in `bench/`; each section is replaced by its "
    "script. Figures are medians with a baseline measured in the same run.\n"
)


def machine_line() -> str:
    return (
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"measured {time.strftime('%Y-%m-%d')}."
    )


def write_section(key: str, title: str, body: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    block = f"<!-- bench:{key} -->\n## {title}\n\n{body.strip()}\n<!-- /bench:{key} -->"
    pattern = re.compile(rf"<!-- bench:{key} -->.*?<!-- /bench:{key} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
