#!/bin/sh
# Build a wheelhouse for an offline install of osprag (run on a connected machine with the same
# OS, CPU architecture and Python minor version as the target, e.g. in `python:3.11-slim`).
#
#   scripts/make_wheelhouse.sh -o wheelhouse            # then copy wheelhouse/ to the target:
#   pip install --no-index --find-links wheelhouse -c wheelhouse/constraints.txt osprag
#
# torch comes pinned (torch==2.13.0) from PyTorch's CPU index: PyPI's Linux wheel is the CUDA
# build and drags in several GB of nvidia-* wheels. Every other wheel is pinned by constraints.txt.
set -eu

usage() {
    cat <<'EOF'
usage: scripts/make_wheelhouse.sh [-o DIR] [--python PY] [--extras LIST] [--torch-index URL] [--dry-run]

  -o, --output DIR      wheelhouse directory (default: ./wheelhouse)
  --python PY           interpreter whose version/platform the wheels are for (default: python3)
  --extras LIST         osprag extras to include, comma-separated (e.g. multilingual)
  --torch-index URL     index serving the CPU torch wheel (default: https://download.pytorch.org/whl/cpu)
  --dry-run             print the commands instead of running them
  -h, --help            show this help
EOF
}

die() {
    printf 'make_wheelhouse: %s\n' "$1" >&2
    printf "run 'scripts/make_wheelhouse.sh --help' for the options\n" >&2
    exit 2
}

need_value() { # option, remaining argument count
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

root=$(cd "$(dirname "$0")/.." && pwd)
out=wheelhouse
py=python3
extras=
torch_index=https://download.pytorch.org/whl/cpu
torch_pin=torch==2.13.0
dry=0

while [ "$#" -gt 0 ]; do
    case "$1" in
    -o | --output)
        need_value "$1" "$#"
        out=$2
        shift 2
        ;;
    --python)
        need_value "$1" "$#"
        py=$2
        shift 2
        ;;
    --extras)
        need_value "$1" "$#"
        extras=$2
        shift 2
        ;;
    --torch-index)
        need_value "$1" "$#"
        torch_index=$2
        shift 2
        ;;
    --dry-run)
        dry=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1" ;;
    esac
done

case "$extras" in
*[!a-z0-9,_-]*) die "--extras takes names like 'multilingual' or 'multilingual,dev', got '$extras'" ;;
esac
case "$out" in
-*) die "--output needs a directory, got '$out'" ;;
esac
command -v "$py" >/dev/null 2>&1 || die "python interpreter '$py' not found"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$py is Python $("$py" -c 'import platform; print(platform.python_version())'); osprag needs >= 3.10"

grep -q "^$torch_pin\$" "$root/constraints.txt" ||
    die "constraints.txt does not pin $torch_pin; update this script's torch_pin with it"

target=$root
if [ -n "$extras" ]; then target="${root}[${extras}]"; fi

run() {
    if [ "$dry" = 1 ]; then
        printf '%s\n' "$*"
    else
        "$@"
    fi
}

run mkdir -p "$out"
# 1. the CPU torch wheel (no nvidia-* dependencies)
run "$py" -m pip download --only-binary=:all: --no-deps --index-url "$torch_index" -d "$out" "$torch_pin"
# 2. osprag and every dependency as wheels (sdists are built here, never on the target); the
#    local torch wheel satisfies the pin, so pip does not fetch the CUDA build
run "$py" -m pip wheel -w "$out" --find-links "$out" -c "$root/constraints.txt" "$target"
# 3. the constraints travel with the wheels
run cp "$root/constraints.txt" "$out/constraints.txt"

if [ "$dry" = 0 ]; then
    count=$(find "$out" -name '*.whl' | wc -l)
    size=$(du -sh "$out" | cut -f1)
    printf 'wheelhouse %s: %s wheels, %s\n' "$out" "$count" "$size"
    printf 'on the target:  python3 -m venv .venv && .venv/bin/pip install --no-index --find-links %s -c %s/constraints.txt osprag\n' "$out" "$out"
fi
