"""Structural checks of the docker-compose stack, the worker image and their configuration.

There is no Docker engine where these tests run, so they read docker-compose.yml, Dockerfile,
.dockerignore and .env.example as files and check the properties the deployment relies on:
start-up ordering via healthchecks, no database port on the host, the UI only on localhost,
GPU reservation for the worker, and no secrets in the repository. When a compose CLI is
installed, the file is also validated by it (that needs no engine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"

TORCH_PIN = "torch==2.14.1"
TORCHVISION_PIN = "torchvision==0.29.1"

# $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-style variable substitution (no nesting; this file does not use it)."""

    def replace(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        present = name in env
        nonempty = bool(env.get(name))
        if op == ":-":
            return env[name] if nonempty else arg
        if op == "-":
            return env[name] if present else arg
        if op in (":?", "?") and not (nonempty if op == ":?" else present):
            raise KeyError(f"required variable {name} is unset: {arg}")
        return env.get(name, "")

    return _VAR.sub(replace, value)


def referenced_variables(text: str) -> set[str]:
    return {m.group("braced") or m.group("bare") for m in _VAR.finditer(text) if not m.group("escaped")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """Service environment as a dict, whichever of compose's two spellings is used."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_condition(service: Mapping[str, Any], on: str) -> str | None:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return "service_started" if on in deps else None
    return (deps.get(on) or {}).get("condition", "service_started") if on in deps else None


def healthcheck_text(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def volume_targets(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only), for both short and long volume syntax."""
    out: dict[str, tuple[str, bool]] = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            # Split from the right: the source may itself contain ':' via ${VAR:-default}.
            parts = re.split(r":(?![^{]*\})", vol)
            source, target = parts[0], parts[1]
            out[target] = (source, len(parts) > 2 and "ro" in parts[2].split(","))
        else:
            out[vol["target"]] = (vol.get("source", ""), bool(vol.get("read_only")))
    return out


def test_compose_file_uses_compose_spec_without_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the top-level `version` key is obsolete in the compose spec"


def test_stack_defines_postgres_prefect_server_and_worker(services: dict[str, Any]) -> None:
    assert {"postgres", "prefect-server", "worker"} <= set(services)


def test_postgres_is_healthchecked_with_pg_isready(services: dict[str, Any]) -> None:
    assert "pg_isready" in healthcheck_text(services["postgres"])


def test_postgres_is_not_published_on_the_host(services: dict[str, Any]) -> None:
    assert not services["postgres"].get("ports"), "only the compose network should reach the database"


def test_postgres_keeps_data_in_a_declared_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    source, _ = volume_targets(services["postgres"])["/var/lib/postgresql/data"]
    assert source in (compose.get("volumes") or {})


def test_postgres_password_must_come_from_the_environment(services: dict[str, Any]) -> None:
    value = environment(services["postgres"])["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", value), value
    with pytest.raises(KeyError):
        interpolate(value, {})


def test_prefect_server_starts_only_after_postgres_is_healthy(services: dict[str, Any]) -> None:
    assert depends_condition(services["prefect-server"], "postgres") == "service_healthy"


def test_prefect_server_is_healthchecked_on_api_health(services: dict[str, Any]) -> None:
    assert "http://localhost:4200/api/health" in healthcheck_text(services["prefect-server"])


def test_prefect_server_stores_state_in_postgres_via_asyncpg(services: dict[str, Any]) -> None:
    env = environment(services["prefect-server"])
    url = interpolate(env["PREFECT_API_DATABASE_CONNECTION_URL"], {"POSTGRES_PASSWORD": "s3cret"})
    assert url.startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in url
    assert ":s3cret@" in url, "the database password must be taken from POSTGRES_PASSWORD"


def test_prefect_server_publishes_only_port_4200_on_localhost_by_default(services: dict[str, Any]) -> None:
    ports = services["prefect-server"].get("ports") or []
    assert len(ports) == 1
    assert isinstance(ports[0], str), "use the short HOST_IP:HOST_PORT:CONTAINER_PORT form"
    host_ip, host_port, container_port = interpolate(ports[0], {}).split(":")
    assert (host_ip, host_port, container_port) == ("127.0.0.1", "4200", "4200")


def test_prefect_server_port_and_bind_address_are_configurable(services: dict[str, Any]) -> None:
    port = services["prefect-server"]["ports"][0]
    env = {"PREFECT_UI_PORT": "14200", "PREFECT_UI_BIND": "0.0.0.0"}
    assert interpolate(port, env) == "0.0.0.0:14200:4200"


def test_worker_is_built_from_this_repository(services: dict[str, Any]) -> None:
    build = services["worker"].get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context in (".", "./")


def test_worker_starts_only_after_prefect_server_is_healthy(services: dict[str, Any]) -> None:
    assert depends_condition(services["worker"], "prefect-server") == "service_healthy"


def test_worker_talks_to_the_prefect_server_api(services: dict[str, Any]) -> None:
    env = environment(services["worker"])
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["REALNET_ARTIFACTS"] == "/artifacts"


def test_worker_registers_deployments_and_polls_the_gpu_pool(services: dict[str, Any]) -> None:
    command = services["worker"]["command"]
    text = " ".join(command) if isinstance(command, list) else command
    assert "prefect work-pool create realnet-gpu" in text
    assert "deploy --all" in text
    assert "prefect worker start --pool realnet-gpu" in text


def test_worker_mounts_data_read_only_and_artifacts_writable(services: dict[str, Any]) -> None:
    volumes = volume_targets(services["worker"])
    assert "/data" in volumes and volumes["/data"][1], "data sets must be mounted read-only at /data"
    assert "/artifacts" in volumes and not volumes["/artifacts"][1]


def test_every_file_the_paper_profile_names_lies_on_a_read_only_worker_mount(services: dict[str, Any]) -> None:
    # The all-categories deployment runs the paper profile in this container: its data roots and
    # weights must be where the worker mounts them, or every run stops at its first check.
    from realnet_core.config import load_config

    cfg = load_config("paper")
    mounts = {target for target, (_, read_only) in volume_targets(services["worker"]).items() if read_only}
    paths = [*cfg.data.roots.values(), cfg.diffusion.init_checkpoint, cfg.backbone.weights]
    assert cfg.diffusion.init_checkpoint and cfg.backbone.weights, "the paper starts from ImageNet weights"
    for path in paths:
        assert any(Path(path).is_relative_to(m) for m in mounts), (path, mounts)


def test_worker_artifacts_default_to_a_declared_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    source, _ = volume_targets(services["worker"])["/artifacts"]
    resolved = interpolate(source, {})
    # A source that is not a path is a named volume, which compose refuses unless declared.
    if not resolved.startswith((".", "/", "~")):
        assert resolved in (compose.get("volumes") or {})


def test_worker_reserves_nvidia_gpus(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") == "all"
        for d in devices
    ), devices


def _password_like(key: str) -> bool:
    return bool(re.search(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY", key, re.IGNORECASE))


def test_no_service_environment_holds_a_literal_secret(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if _password_like(key):
                assert value.startswith("${") and value.endswith("}"), f"{name}.{key} is a literal"
            # user:password@host inside a URL: the password part must be a variable too.
            m = re.search(r"://[^:/@\s]+:([^@\s]+)@", value)
            if m:
                assert m.group(1).startswith("${"), f"{name}.{key} embeds a literal password"


def test_dockerfile_installs_pinned_torch_before_the_project() -> None:
    text = DOCKERFILE.read_text()
    torch_line = next(
        (i for i, line in enumerate(text.splitlines()) if TORCH_PIN in line and TORCHVISION_PIN in line),
        None,
    )
    project_line = next(
        (
            i
            for i, line in enumerate(text.splitlines())
            if re.search(r"pip install\s+(\S+\s+)*\.(\s|$)", line)
        ),
        None,
    )
    assert torch_line is not None, f"Dockerfile must `pip install {TORCH_PIN} {TORCHVISION_PIN}`"
    assert project_line is not None, "Dockerfile must `pip install .`"
    # torch in its own earlier layer so code changes do not re-download ~5 GB.
    assert torch_line < project_line


def test_dockerfile_torch_pins_satisfy_pyproject() -> None:
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", PYPROJECT.read_text(), re.MULTILINE | re.DOTALL)
    assert deps
    # Comment lines may quote error messages; only the real entries are requirements.
    body = "\n".join(line for line in deps.group(1).splitlines() if not line.strip().startswith("#"))
    reqs = {r.name: r for r in (Requirement(s) for s in re.findall(r'"([^"]+)"', body))}
    for pin in (TORCH_PIN, TORCHVISION_PIN):
        name, version = pin.split("==")
        assert reqs[name].specifier.contains(version), f"{pin} violates pyproject's {reqs[name]}"


def test_dockerfile_runs_as_non_root_on_python_311() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git", ".env", "artifacts", "demo_data"} <= entries


def test_env_example_documents_every_variable_the_compose_file_uses() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert "POSTGRES_PASSWORD" in documented
    missing = referenced_variables(COMPOSE_FILE.read_text()) - documented
    assert not missing, f".env.example does not mention {sorted(missing)}"


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _run_compose_config(cli: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    # An empty env file so a developer's own .env cannot change the outcome.
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    return subprocess.run(
        [*cli, "--env-file", str(empty_env), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_cli_accepts_the_file_and_demands_a_password(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose CLI: `docker compose` plugin and `docker-compose` are both missing")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PREFECT_", "REALNET_"))}
    ok = _run_compose_config(cli, {**env, "POSTGRES_PASSWORD": "test-only"}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    refused = _run_compose_config(cli, env, tmp_path)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
