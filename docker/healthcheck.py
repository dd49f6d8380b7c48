"""Container health probe: exit 0 when osp serve's /health/ready answers 200, else 1.

Python's urllib because the slim base image has no curl; stdlib only, so it starts in ~30 ms
and cannot break with osprag's own imports.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("OSP_SERVER__PORT", "8765")
    url = os.environ.get("OSP_HEALTH_URL", f"http://127.0.0.1:{port}/health/ready")
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503 with the failing checks in the body
        body = exc.read(500).decode("utf-8", "replace")
        print(f"not ready: HTTP {exc.code} {body}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
