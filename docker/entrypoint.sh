#!/bin/sh
# osprag container entrypoint.
#
#   (no arguments) | serve [ARGS]   check the token, wait for Chroma, exec `osp serve` on 0.0.0.0
#   anything else (osp doctor, sh)  exec'd as given, e.g. `docker run IMAGE osp doctor`
#
# A container binds 0.0.0.0, so the server must never start without a token: `osp serve` refuses
# that too, but only after its imports; this check fails in milliseconds and names the Docker
# remedy. Exit codes follow osp's table: 3 = configuration invalid, 7 = store unavailable.
#
# Settings read here (all optional):
#   OSP_SERVER__TOKEN, OSP_SERVER__TOKEN_FILE, OSP_SERVER__TOKENS_FILE   token sources, as osp reads them
#   OSP_DOCKER_SECRET       secret file used as OSP_SERVER__TOKEN_FILE when that is unset
#                           (default /run/secrets/osp_token, i.e. compose `secrets: [osp_token]`)
#   OSP_CHROMA_URL          Chroma server to wait for (no wait when unset: embedded storage)
#   OSP_CHROMA_WAIT_TRIES   heartbeat attempts before giving up (default 30)
#   OSP_CHROMA_WAIT_DELAY   seconds between attempts (default 2)
#   OSP_SERVER__PORT        port (default 8765)
set -eu

say() { printf 'osprag-entrypoint: %s\n' "$*" >&2; }
fail() {
    code=$1
    shift
    say "$*"
    exit "$code"
}

# The Docker secret becomes the admin token file unless a token file was named explicitly. Only
# the path is passed on: the token itself never enters the environment (/proc/*/environ).
secret=${OSP_DOCKER_SECRET:-/run/secrets/osp_token}
if [ -z "${OSP_SERVER__TOKEN_FILE:-}" ] && [ -e "$secret" ]; then
    OSP_SERVER__TOKEN_FILE=$secret
    export OSP_SERVER__TOKEN_FILE
fi

case "${1:-serve}" in
serve) if [ "$#" -gt 0 ]; then shift; fi ;;
-*) ;; # options only: `docker run IMAGE --workers 2` means serve with them
*) exec "$@" ;;
esac

# --- token -------------------------------------------------------------------------------------
if [ -n "${OSP_SERVER__TOKEN_FILE:-}" ]; then
    [ -r "$OSP_SERVER__TOKEN_FILE" ] ||
        fail 3 "token file $OSP_SERVER__TOKEN_FILE is missing or unreadable by uid $(id -u); create it (see docs/deployment.md) or unset OSP_SERVER__TOKEN_FILE"
    # a file of blanks is no token
    grep -q '[^[:space:]]' "$OSP_SERVER__TOKEN_FILE" ||
        fail 3 "token file $OSP_SERVER__TOKEN_FILE is empty; write a token into it, e.g. python3 -c 'import secrets; print(\"osp_\" + secrets.token_urlsafe(32))' > secrets/osp_token"
fi
tokens_file=${OSP_SERVER__TOKENS_FILE:-${OSP_DATA_DIR:-osp-data}/tokens.toml}
has_token=no
if [ -n "${OSP_SERVER__TOKEN:-}" ] || [ -n "${OSP_SERVER__TOKEN_FILE:-}" ]; then
    has_token=yes
fi
if [ -r "$tokens_file" ] && grep -q '^[[:space:]]*\[\[tokens\]\]' "$tokens_file"; then
    has_token=yes
fi
if [ "$has_token" = no ]; then
    fail 3 "refusing to serve on 0.0.0.0 without a token: create secrets/osp_token and add the osp_token secret (compose.yaml does), set OSP_SERVER__TOKEN_FILE or OSP_SERVER__TOKEN, or create tokens with 'osp token create' in $tokens_file"
fi

# --- Chroma ------------------------------------------------------------------------------------
if [ -n "${OSP_CHROMA_URL:-}" ]; then
    tries=${OSP_CHROMA_WAIT_TRIES:-30}
    delay=${OSP_CHROMA_WAIT_DELAY:-2}
    url="${OSP_CHROMA_URL%/}/api/v2/heartbeat"
    # python, not curl (the slim image has none); OSP_CHROMA_TOKEN is sent for an auth proxy
    probe='import os, sys, urllib.request as u
r = u.Request(sys.argv[1])
t = os.environ.get("OSP_CHROMA_TOKEN")
if t: r.add_header("Authorization", "Bearer " + t)
u.urlopen(r, timeout=3).read()'
    n=1
    until python3 -c "$probe" "$url" 2>/dev/null; do
        if [ "$n" -ge "$tries" ]; then
            fail 7 "Chroma at $OSP_CHROMA_URL gave no heartbeat ($url) after $tries attempts; check that the chroma service runs and shares a network with osprag (docker compose ps, docker compose logs chroma)"
        fi
        n=$((n + 1))
        sleep "$delay"
    done
    say "Chroma at $OSP_CHROMA_URL is up"
fi

exec osp serve --host 0.0.0.0 --port "${OSP_SERVER__PORT:-8765}" "$@"
