"""Static checks of the deployment files in docker/ (no Docker engine needed).

`docker-compose config` validation runs when the docker-compose binary is on
PATH; without it the check is skipped, unless CI is set, where it fails
(scripts/install.sh installs docker-compose for CI).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.require import unavailable

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
STACK = DOCKER / "stack.yml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
ENTRYPOINT_IN_IMAGE = "/usr/local/bin/radnode-entrypoint"

# Environment for interpolating the stack file (its NFS server is mandatory).
STACK_ENV = {"RADNODE_NFS_SERVER": "192.0.2.10"}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: top level is not a mapping"
    assert isinstance(data.get("services"), dict) and data["services"], f"{path.name}: no services"
    return data


def _command_words(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), command
    return [str(word) for word in command]


def _runs_radnode(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return "radnode" in image.split("/")[-1] or "docker/Dockerfile" in dockerfile


def _radnode_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in data["services"].items() if _runs_radnode(svc)}


def _docker_compose() -> str | None:
    binary = shutil.which("docker-compose")
    if binary is None:
        unavailable("docker-compose is not on PATH (scripts/install.sh installs it)")
    return binary


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    if current:
        lines.append(current)
    out = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


# --- compose and stack files ------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_parses_as_yaml(path: Path) -> None:
    _load(path)


COMPOSE_SECRETS = {"POSTGRES_PASSWORD": "pg-secret-1", "RABBITMQ_PASSWORD": "mq-secret-2", "ORTHANC_PASSWORD": "pacs-secret-3"}


def test_compose_config_is_valid() -> None:
    binary = _docker_compose()
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=120,
        env={**os.environ, **COMPOSE_SECRETS},
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_start_without_each_password(missing: str) -> None:
    """No fallback passwords (issue 14): a missing one stops `config` with its name."""
    binary = _docker_compose()
    env = {k: v for k, v in {**os.environ, **COMPOSE_SECRETS}.items() if k != missing}
    proc = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert missing in proc.stderr


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_no_fallback_passwords(path: Path) -> None:
    text = path.read_text()
    for weak in ("radnode-dev-only", ":-demo}", "PASSWORD:-"):
        assert weak not in text, weak


def test_stack_config_is_valid() -> None:
    binary = _docker_compose()
    proc = subprocess.run(
        [binary, "-f", str(STACK), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **STACK_ENV},
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_expected_services(path: Path) -> None:
    services = _load(path)["services"]
    expected = {"rabbitmq", "postgres", "orthanc", "listener", "worker", "web"}
    if path == STACK:
        expected.add("worker-gpu")
    assert expected <= set(services), sorted(expected - set(services))


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_radnode_commands_are_real_subcommands(path: Path) -> None:
    from radnode.cli import main

    services = _radnode_services(_load(path))
    assert {"listener", "worker", "web"} <= set(services)
    for name, service in services.items():
        assert "command" in service, f"{path.name}: {name} has no command"
        words = _command_words(service["command"])
        assert words, f"{path.name}: {name} has an empty command"
        assert words[0] in main.commands, (
            f"{path.name}: service {name} runs `radnode {words[0]}`, "
            f"not a radnode subcommand ({sorted(main.commands)})"
        )


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_roles(path: Path) -> None:
    services = _load(path)["services"]
    assert _command_words(services["listener"]["command"])[0] == "listen"
    assert _command_words(services["worker"]["command"])[0] == "worker"
    assert _command_words(services["web"]["command"])[0] == "web"


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_every_service_has_a_healthcheck(path: Path) -> None:
    for name, service in _load(path)["services"].items():
        if name == "orthanc":  # the image brings its own
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test, f"{path.name}: {name} has no health check"


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_python_healthchecks_compile(path: Path) -> None:
    """The `python -c` one-liners in the health checks are valid Python."""
    found = 0
    for name, service in _radnode_services(_load(path)).items():
        test = _command_words((service.get("healthcheck") or {}).get("test") or [])
        for i, word in enumerate(test[:-1]):
            if word == "-c" and i > 0 and test[i - 1].startswith("python"):
                compile(test[i + 1], f"{path.name}:{name}:healthcheck", "exec")
                found += 1
    assert found >= 3


def test_compose_dependencies_wait_for_health() -> None:
    services = _load(COMPOSE)["services"]
    for name, service in _radnode_services(_load(COMPOSE)).items():
        depends = service.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions"
        for dep in ("postgres", "rabbitmq"):
            assert depends.get(dep, {}).get("condition") == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep]


def test_compose_env_points_at_postgres_and_rabbitmq() -> None:
    for name, service in _radnode_services(_load(COMPOSE)).items():
        env = service["environment"]
        assert str(env["RADNODE_DATABASE__URL"]).startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/" in env["RADNODE_DATABASE__URL"], name
        assert str(env["RADNODE_QUEUE__BROKER_URL"]).startswith("amqp://"), name
        assert "@rabbitmq:5672/" in env["RADNODE_QUEUE__BROKER_URL"], name
        assert env["RADNODE_DATA_DIR"] == "/data", name
        assert any(str(v).startswith("radnode-data:/data") for v in service["volumes"]), name


def test_compose_ports_loopback_except_dicom() -> None:
    """Every published port binds to 127.0.0.1 by default, except DICOM 11112."""
    for name, service in _load(COMPOSE)["services"].items():
        for port in service.get("ports", []):
            spec = str(port)
            resolved = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec)
            if resolved.endswith(":11112"):
                assert name == "listener", (name, spec)
                continue
            assert resolved.startswith("127.0.0.1:"), f"{name} publishes {spec} beyond loopback"


def test_stack_gpu_worker_reserves_a_gpu() -> None:
    service = _load(STACK)["services"]["worker-gpu"]
    deploy = service["deploy"]
    generic = deploy["resources"]["reservations"]["generic_resources"]
    specs = [g["discrete_resource_spec"] for g in generic]
    assert {"kind": "NVIDIA-GPU", "value": 1} in specs
    assert "node.labels.gpu == true" in deploy["placement"]["constraints"]
    assert "gpu" in service["image"].split("/")[-1]
    providers = service["environment"]["RADNODE_ANALYZERS__PROVIDERS"]
    assert providers.index("CUDAExecutionProvider") < providers.index("CPUExecutionProvider")


def test_stack_uses_secrets_not_passwords() -> None:
    data = _load(STACK)
    declared = data["secrets"]
    for secret in ("postgres_password", "radnode_database_url", "radnode_broker_url"):
        assert secret in declared, secret
    assert data["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name, service in _radnode_services(data).items():
        sources = {s if isinstance(s, str) else s["source"] for s in service["secrets"]}
        assert {"radnode_database_url", "radnode_broker_url"} <= sources, name
        env = service.get("environment", {})
        assert "RADNODE_DATABASE__URL" not in env and "RADNODE_QUEUE__BROKER_URL" not in env, name
    text = STACK.read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD:" not in text and "RABBITMQ_DEFAULT_PASS" not in text


def test_stack_deploy_policies() -> None:
    services = _load(STACK)["services"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name, service in _radnode_services(_load(STACK)).items():
        deploy = service["deploy"]
        assert "restart_policy" in deploy, name
        assert "update_config" in deploy, name
    volumes = _load(STACK)["volumes"]
    assert {"radnode-data", "postgres-data", "rabbitmq-data"} <= set(volumes)


# --- Dockerfiles ------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_installs_this_repository(kind: str) -> None:
    instructions = _dockerfile_instructions(DOCKERFILES[kind])
    copy_at = next(i for i, (ins, args) in enumerate(instructions) if ins == "COPY" and args.split()[0] == ".")
    target = ".[gpu]" if kind == "gpu" else "."
    pattern = re.compile(r"pip install\b[^&;]*?\s[\"']?" + re.escape(target) + r"[\"']?(\s|$)")
    installs = [i for i, (ins, args) in enumerate(instructions) if ins == "RUN" and pattern.search(args)]
    assert installs, f"{kind}: no `pip install {target}`"
    assert installs[0] > copy_at, f"{kind}: pip install runs before the repository is copied"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_user_volume_entrypoint(kind: str) -> None:
    instructions = _dockerfile_instructions(DOCKERFILES[kind])
    final_stage = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    by_kind: dict[str, list[str]] = {}
    for ins, args in final_stage:
        by_kind.setdefault(ins, []).append(args)
    assert by_kind["USER"][-1] == "radnode"
    assert "/data" in by_kind["VOLUME"][-1]
    assert any("RADNODE_DATA_DIR=/data" in env for env in by_kind["ENV"])
    assert "11112" in by_kind["EXPOSE"][-1] and "8080" in by_kind["EXPOSE"][-1]
    assert any(f"docker/entrypoint.sh {ENTRYPOINT_IN_IMAGE}" in c for c in by_kind["COPY"])
    assert by_kind["ENTRYPOINT"][-1] == f'["{ENTRYPOINT_IN_IMAGE}"]'
    assert by_kind["CMD"][-1] == ('["worker"]' if kind == "gpu" else '["serve"]')


def test_gpu_dockerfile_removes_cpu_onnxruntime() -> None:
    text = DOCKERFILES["gpu"].read_text(encoding="utf-8")
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\d+(\.\d+)?-cudnn-runtime-ubuntu22\.04$", text, re.M)
    assert "pip uninstall -y onnxruntime" in text
    assert "CUDAExecutionProvider" in text


@pytest.mark.parametrize("path", [COMPOSE, STACK], ids=lambda p: p.name)
def test_services_use_the_entrypoint_image(path: Path) -> None:
    """Nobody overrides the entrypoint: the secrets are exported there."""
    for name, service in _radnode_services(_load(path)).items():
        assert "entrypoint" not in service, name


def test_dockerignore_keeps_context_small() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", "radnode-data", "bench/out", "**/__pycache__"):
        assert needed in entries, needed
    assert "docker" not in entries and "radnode" not in entries


# --- entrypoint.sh ----------------------------------------------------------


def test_entrypoint_syntax() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh is not executable"


def _run_entrypoint(tmp_path: Path, secrets: dict[str, str], *args: str, env: dict[str, str] | None = None) -> str:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value, encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "radnode"
    fake.write_text('#!/bin/sh\necho "ARGS=$*"\nenv\n', encoding="utf-8")
    fake.chmod(0o755)
    base = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "RADNODE_SECRETS_DIR": str(secrets_dir),
    }
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _env_lines(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_entrypoint_exports_secrets(tmp_path: Path) -> None:
    db = "postgresql+psycopg://radnode:p%40ss w0rd$x@postgres:5432/radnode"
    broker = "amqp://radnode:s3cret@rabbitmq:5672/%2F"
    out = _run_entrypoint(
        tmp_path,
        {"radnode_database_url": db + "\n", "radnode_broker_url": broker},
        "worker",
        "--apps",
        "glioma",
        env={"RADNODE_DATABASE__URL": "sqlite:///overridden"},
    )
    env = _env_lines(out)
    assert env["ARGS"] == "worker --apps glioma"
    assert env["RADNODE_DATABASE__URL"] == db  # the secret wins, trailing newline stripped
    assert env["RADNODE_QUEUE__BROKER_URL"] == broker


def test_entrypoint_without_secrets_keeps_environment(tmp_path: Path) -> None:
    out = _run_entrypoint(
        tmp_path, {"radnode_broker_url": ""}, "listen", env={"RADNODE_QUEUE__BROKER_URL": "amqp://env"}
    )
    env = _env_lines(out)
    assert env["ARGS"] == "listen"
    assert "RADNODE_DATABASE__URL" not in env
    assert env["RADNODE_QUEUE__BROKER_URL"] == "amqp://env"  # an empty secret is ignored


def test_entrypoint_passes_other_programs_through(tmp_path: Path) -> None:
    out = _run_entrypoint(
        tmp_path, {"radnode_broker_url": "amqp://x"}, "sh", "-c", 'echo "broker=$RADNODE_QUEUE__BROKER_URL"'
    )
    assert out.strip() == "broker=amqp://x"
