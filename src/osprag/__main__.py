"""``python -m osprag``: the ``osp`` command without its console script (e.g. in containers)."""

from osprag.cli import run

if __name__ == "__main__":
    run()
