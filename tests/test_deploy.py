"""The Docker deployment without a Docker engine: the entrypoint script run directly with sh,
the health probe against a tiny HTTP server, compose.yaml and the Dockerfile checked against
the deployment rules (docs/deployment.md), and the wheelhouse script's arguments."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
WHEELHOUSE = ROOT / "scripts" / "make_wheelhouse.sh"
TOKEN = "osp_" + "t" * 43


# ----------------------------------------------------------------------------- entrypoint
@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A PATH dir whose ``osp`` reports how it was exec'd, and whose python3 is this one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    osp = bin_dir / "osp"
    osp.write_text(
        "#!/bin/sh\n"
        'echo "osp $*"\n'
        'echo "token_file=${OSP_SERVER__TOKEN_FILE:-}"\n'
        'echo "token_env=${OSP_SERVER__TOKEN:-}"\n',
        encoding="utf-8",
    )
    osp.chmod(osp.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "python3").symlink_to(sys.executable)
    return bin_dir


def run_entry(
    fake_bin: Path, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "OSP_DATA_DIR": str(tmp_path / "data"),
        "OSP_DOCKER_SECRET": str(tmp_path / "no-secret"),
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_to_serve_without_any_token(fake_bin: Path, tmp_path: Path) -> None:
    proc = run_entry(fake_bin, tmp_path)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0] and "secrets/osp_token" in lines[0]
    assert "osp serve" not in proc.stdout  # never reached the exec


def test_serves_with_a_token_from_the_environment(fake_bin: Path, tmp_path: Path) -> None:
    proc = run_entry(fake_bin, tmp_path, OSP_SERVER__TOKEN=TOKEN, OSP_SERVER__PORT="9001")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "osp serve --host 0.0.0.0 --port 9001"


def test_docker_secret_becomes_the_token_file_and_stays_out_of_the_env(
    fake_bin: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "osp_token"
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    proc = run_entry(fake_bin, tmp_path, "serve", "--workers", "2", OSP_DOCKER_SECRET=str(secret))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "osp serve --host 0.0.0.0 --port 8765 --workers 2"
    assert out[1] == f"token_file={secret}" and out[2] == "token_env="
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("content", "message"), [(None, "missing or unreadable"), ("  \n", "is empty")]
)
def test_a_named_token_file_must_hold_a_token(
    fake_bin: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = run_entry(fake_bin, tmp_path, OSP_SERVER__TOKEN_FILE=str(path))
    assert proc.returncode == 3 and message in proc.stderr and not proc.stdout


def test_a_tokens_file_with_entries_counts_as_configured(fake_bin: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    tokens = data / "tokens.toml"
    tokens.write_text("# no tokens yet\n", encoding="utf-8")
    assert run_entry(fake_bin, tmp_path).returncode == 3  # a file without [[tokens]] is none
    tokens.write_text(
        '[[tokens]]\nname = "qm"\nsha256 = "ab"\nrole = "reader"\nclearance = 2\n',
        encoding="utf-8",
    )
    proc = run_entry(fake_bin, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("osp serve --host 0.0.0.0")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fails_clearly_when_chroma_never_answers(fake_bin: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = run_entry(
        fake_bin,
        tmp_path,
        OSP_SERVER__TOKEN=TOKEN,
        OSP_CHROMA_URL=url,
        OSP_CHROMA_WAIT_TRIES="2",
        OSP_CHROMA_WAIT_DELAY="0",
    )
    assert proc.returncode == 7
    assert f"Chroma at {url} gave no heartbeat" in proc.stderr
    assert "after 2 attempts" in proc.stderr and not proc.stdout


def test_waits_for_a_real_chroma_heartbeat(
    fake_bin: Path, tmp_path: Path, chroma_url: str
) -> None:
    proc = run_entry(
        fake_bin, tmp_path, OSP_SERVER__TOKEN=TOKEN, OSP_CHROMA_URL=chroma_url + "/"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Chroma at {chroma_url}/ is up" in proc.stderr
    assert proc.stdout.startswith("osp serve --host 0.0.0.0 --port 8765")


def test_other_commands_pass_through_without_the_serve_checks(
    fake_bin: Path, tmp_path: Path
) -> None:
    proc = run_entry(fake_bin, tmp_path, "osp", "doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "osp doctor --json"
    failing = run_entry(fake_bin, tmp_path, "sh", "-c", "exit 5")
    assert failing.returncode == 5  # exec'd: its exit code is the container's


def test_entrypoint_starts_the_real_server_which_the_probe_sees_ready(tmp_path: Path) -> None:
    """The whole chain as the container runs it: secret -> entrypoint -> exec osp serve on
    0.0.0.0 -> /health/ready 200 for the probe, 401 without the token -> SIGTERM ends it."""
    import httpx

    secret = tmp_path / "osp_token"
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    port = str(_closed_port())
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OSP_DATA_DIR": str(tmp_path / "data"),
        "OSP_DOCKER_SECRET": str(secret),
        "OSP_SERVER__PORT": port,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("OSP_CHROMA_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while _probe(port).returncode != 0:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/api/v1/whoami"
        assert httpx.get(url, timeout=10).status_code == 401
        me = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert me.status_code == 200 and me.json()["name"] == "secret-admin"  # from the file
    finally:
        proc.terminate()  # the shell exec'd the server: the signal reaches uvicorn itself
        code = proc.wait(60)
        log.close()
    text = (tmp_path / "serve.log").read_text(encoding="utf-8")
    # uvicorn shuts down cleanly, then re-raises SIGTERM (docker stop reports 143)
    assert code in (0, -15) and "Application shutdown complete" in text, text


def test_entrypoint_is_posix_sh_and_shellcheck_clean() -> None:
    text = ENTRYPOINT.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert os.access(ENTRYPOINT, os.X_OK)
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(ENTRYPOINT)]).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(
            ["shellcheck", "-s", "sh", str(ENTRYPOINT), str(WHEELHOUSE)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- health probe
@pytest.fixture
def ready_server() -> Iterator[tuple[str, dict[str, int]]]:
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            code = state["status"] if self.path == "/health/ready" else 404
            body = b'{"status":"unavailable","checks":{"store":"down"}}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield str(server.server_address[1]), state
    finally:
        server.shutdown()
        server.server_close()


def _probe(port: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "OSP_SERVER__PORT": port}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
    )


def test_health_probe_follows_ready(ready_server: tuple[str, dict[str, int]]) -> None:
    port, state = ready_server
    assert _probe(port).returncode == 0
    state["status"] = 503
    proc = _probe(port)
    assert proc.returncode == 1 and "HTTP 503" in proc.stderr and "store" in proc.stderr
    closed = _probe(str(_closed_port()))
    assert closed.returncode == 1 and "not ready" in closed.stderr


# ----------------------------------------------------------------------------- compose.yaml
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _default(value: Any) -> str:
    """A compose value as it is with no variables set (``${X:-d}`` -> ``d``)."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _pin(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} not pinned in constraints.txt")


def test_chroma_image_matches_the_chromadb_pin(compose: dict[str, Any]) -> None:
    pin = _pin("chromadb")
    assert compose["services"]["chroma"]["image"] == f"chromadb/chroma:{pin}"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"chromadb>={pin},' in pyproject  # the range starts at the tested version


def test_chroma_is_reachable_only_on_an_internal_network(compose: dict[str, Any]) -> None:
    chroma = compose["services"]["chroma"]
    assert "ports" not in chroma and "network_mode" not in chroma
    nets = chroma.get("networks")
    assert nets, "without networks chroma joins the default network, which is not internal"
    for name in nets:
        assert compose["networks"][name].get("internal") is True, name
    cmd = chroma["command"]
    assert cmd[cmd.index("--path") + 1] == "/data"
    assert any(v.endswith(":/data") for v in chroma["volumes"])
    # chroma 1.x ignores every auth variable: configuring one would only pretend
    assert not any("AUTH" in str(k).upper() for k in chroma.get("environment", {}) or {})


def test_osprag_publishes_on_loopback_only_by_default(compose: dict[str, Any]) -> None:
    osprag = compose["services"]["osprag"]
    assert osprag["ports"], "the API port must be published"
    for port in osprag["ports"]:
        assert isinstance(port, dict), "long syntax, so the host address cannot be dropped"
        assert _default(port["host_ip"]) == "127.0.0.1"
        assert int(port["target"]) == 8765
    env = osprag["environment"]
    assert env["OSP_CHROMA_URL"] == "http://chroma:8000" and env["OSP_STORAGE"] == "server"
    shared = set(osprag["networks"]) & set(compose["services"]["chroma"]["networks"])
    assert shared, "osprag must share the internal network with chroma"
    assert osprag["depends_on"]["chroma"]["condition"] == "service_healthy"


def test_the_token_secret_is_required(compose: dict[str, Any]) -> None:
    osprag = compose["services"]["osprag"]
    assert "osp_token" in osprag["secrets"]
    assert compose["secrets"]["osp_token"]["file"] == "./secrets/osp_token"
    assert osprag["environment"]["OSP_SERVER__TOKEN_FILE"] == "/run/secrets/osp_token"
    env = osprag["environment"]
    assert not env.get("OSP_SERVER__TOKEN"), "no token in the compose file itself"
    assert "secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8")


@pytest.mark.parametrize("service", ["osprag", "chroma"])
def test_limits_logging_and_healthchecks(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    limits = svc["deploy"]["resources"]["limits"]
    assert re.fullmatch(r"\d+[mg]", str(limits["memory"])) and float(limits["cpus"]) > 0
    log = svc["logging"]
    assert log["driver"] == "json-file"
    assert re.fullmatch(r"\d+[km]", log["options"]["max-size"]) and int(log["options"]["max-file"])
    test = " ".join(svc["healthcheck"]["test"])
    assert ("/api/v2/heartbeat" in test) if service == "chroma" else ("healthcheck" in test)
    assert svc["restart"] == "unless-stopped"


def test_compose_volumes_are_declared(compose: dict[str, Any]) -> None:
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert source.startswith("./") or source in compose["volumes"], vol


# ----------------------------------------------------------------------------- Dockerfile
def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_base_user_and_entry() -> None:
    args = {k: v for k, _, v in (r.partition("=") for i, r in _instructions() if i == "ARG")}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    final = _stages()[-1]
    users = [r for i, r in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1] == "10001:10001"
    runs = " ".join(r for i, r in final if i == "RUN")
    assert "--uid 10001" in runs and "--gid 10001" in runs
    assert ("EXPOSE", "8765") in final
    assert ("ENTRYPOINT", '["osprag-entrypoint"]') in final
    env = " ".join(r for i, r in final if i == "ENV")
    for setting in ("HF_HUB_OFFLINE=1", "OSP_MODEL_DIR=/opt/osprag/models", "OSP_DATA_DIR=/data"):
        assert setting in env


def test_dockerfile_healthcheck_probes_ready() -> None:
    final = _stages()[-1]
    checks = [r for i, r in final if i == "HEALTHCHECK"]
    assert len(checks) == 1 and "osprag-healthcheck" in checks[0]
    assert "curl" not in checks[0]  # the slim image has none
    assert "/health/ready" in HEALTHCHECK.read_text(encoding="utf-8")


def test_dockerfile_pins_cpu_torch_and_bakes_the_onnx_export() -> None:
    build = _stages()[0]
    runs = [r for i, r in build if i == "RUN"]
    torch = [r for r in runs if "torch" in r]
    assert torch and all("torch==2.13.0" in r for r in torch)
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text(encoding="utf-8").split("\n")
    assert any("download.pytorch.org/whl/cpu" in r for r in torch)
    assert any("-c constraints.txt" in r and "pip install" in r for r in runs)
    assert any("osp -q model export" in r for r in runs)
    env = " ".join(r for i, r in build if i == "ENV")
    assert "OSP_MODEL_DIR=/opt/osprag/models" in env and "HF_HUB_OFFLINE=1" in env
    copies = [r for i, r in _stages()[-1] if i == "COPY"]
    assert "--from=build /opt/osprag/models /opt/osprag/models" in copies


def test_build_context_holds_what_the_dockerfile_copies_and_no_secrets() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"  # allow-list
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not any(a.startswith(("secrets", "osp-data", ".venv", ".git")) for a in allowed)
    for ins, rest in _instructions():
        if ins == "COPY" and "--from" not in rest:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src.split("/")[0] in allowed, f"{src} is excluded by .dockerignore"


# ----------------------------------------------------------------------------- wheelhouse
def _wheelhouse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(WHEELHOUSE), *args], capture_output=True, text=True, timeout=60
    )


def test_wheelhouse_dry_run_pins_torch_and_constraints(tmp_path: Path) -> None:
    out = tmp_path / "wh"
    proc = _wheelhouse("--dry-run", "-o", str(out), "--extras", "multilingual")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    torch = next(line for line in lines if "pip download" in line)
    assert "torch==2.13.0" in torch and "--index-url https://download.pytorch.org/whl/cpu" in torch
    wheel = next(line for line in lines if "pip wheel" in line)
    assert f"-w {out}" in wheel and f"--find-links {out}" in wheel
    assert f"-c {ROOT}/constraints.txt" in wheel and wheel.endswith(f"{ROOT}[multilingual]")
    assert any(line.endswith(f"{out}/constraints.txt") for line in lines)
    assert not out.exists()  # a dry run touches nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument: --bogus"),
        (["-o"], "-o needs a value"),
        (["--extras", "x;rm -rf /"], "--extras takes names"),
        (["--python", "no-such-python3"], "'no-such-python3' not found"),
    ],
)
def test_wheelhouse_rejects_bad_arguments(args: list[str], message: str) -> None:
    proc = _wheelhouse(*args)
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_wheelhouse_help() -> None:
    proc = _wheelhouse("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: scripts/make_wheelhouse.sh")
