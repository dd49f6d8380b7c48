"""Regenerate the README's settings table from the Settings class (`osp config --markdown`)."""

from __future__ import annotations

import re
from pathlib import Path

from osprag.config import settings_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    text = README.read_text(encoding="utf-8")
    block = f"<!-- settings-table -->\n{settings_markdown()}\n<!-- /settings-table -->"
    new = re.sub(r"<!-- settings-table -->.*?<!-- /settings-table -->", lambda _: block, text,
                 flags=re.S)
    README.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
