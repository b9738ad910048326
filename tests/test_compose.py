"""The container images and the compose stack, checked without a Docker engine.

The compose file and the Dockerfiles are parsed (PyYAML, a small Dockerfile reader) and
their structure asserted: what waits for what, what is mounted how, what runs as whom,
and that nothing secret is written down. `.dockerignore` is evaluated with Docker's
rules (last match wins, a match on a parent folder counts). Where Docker Compose v2+ is
installed, `docker compose config` also validates the file as Compose reads it.
The health check script the images run is exercised against real Redis and a real
HTTP listener.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import redis as sync_redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = {"gateway": ROOT / "Dockerfile.gateway", "pipeline": ROOT / "Dockerfile.pipeline"}
HEALTHCHECK_SCRIPT = ROOT / "compose" / "healthcheck.py"

APP_SERVICES = ("migrate", "gateway", "pipeline", "beat")
LONG_RUNNING = ("redis", "postgres", "gateway", "pipeline", "beat")
WAITING_SERVICES = ("gateway", "pipeline", "beat")
BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
VAR_REF = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?::?[-?][^}]*)?\}$")
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|MNEMONIC|SEED|CREDENTIAL)", re.I)
# Settings that must only ever come from .env, never from the compose file.
APP_SECRETS = (
    "API_TOKENS",
    "DATURA_API_KEY",
    "CHUTES_API_KEY",
    "WALLET_MNEMONIC",
    "WALLET_PASSWORD",
)


# --------------------------------------------------------------------------- helpers


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@dataclass(frozen=True)
class Instruction:
    cmd: str  # upper case, e.g. "COPY"
    args: str  # everything after the instruction word, continuations joined

    def words(self) -> list[str]:
        return self.args.split()

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD/HEALTHCHECK CMD arguments."""
        start = self.args.index("[")
        value = json.loads(self.args[start:])
        assert isinstance(value, list)
        return [str(item) for item in value]

    def flags_and_operands(self) -> tuple[list[str], list[str]]:
        words = self.words()
        flags = [w for w in words if w.startswith("--")]
        return flags, [w for w in words if not w.startswith("--")]


def parse_dockerfile(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage (a new stage at each FROM)."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside continuations) and blank lines
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((pending + stripped).strip())
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    stages: list[list[Instruction]] = []
    for text in logical:
        cmd, _, args = text.partition(" ")
        instruction = Instruction(cmd.upper(), args.strip())
        if instruction.cmd == "FROM":
            stages.append([])
        assert stages, f"{path.name}: {instruction.cmd} before the first FROM"
        stages[-1].append(instruction)
    return stages


def env_assignments(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.cmd == "ENV":
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the KEY=value form"
                values[key] = value
    return values


def procfile() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    return entries


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            char = pattern[i]
            out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            i += 1
    return re.compile(out + "$")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _dockerignore_regex(pattern)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules((ROOT / ".dockerignore").read_text())


def secret_findings(node: Any, path: str = "") -> list[str]:
    """Secret-looking values in a parsed compose document (variable references are fine)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if (
                isinstance(value, str | int | float)
                and SECRET_NAME.search(str(key))
                and not VAR_REF.match(str(value))
                and value != ""  # blanked (least privilege), not a secret
            ):
                found.append(f"{here}: a secret-named setting with a literal value")
            found.extend(secret_findings(value, here))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, str) and "=" in item:  # list-form environment: KEY=value
                key, _, value = item.partition("=")
                if SECRET_NAME.search(key) and not VAR_REF.match(value):
                    found.append(f"{path}[{index}]: a secret-named setting with a literal value")
            found.extend(secret_findings(item, f"{path}[{index}]"))
    elif isinstance(node, str):
        without_refs = re.sub(r"\$\{[^}]*\}", "", node)
        if re.search(r"(?i)bearer\s+[A-Za-z0-9._~+/-]{8,}", without_refs):
            found.append(f"{path}: a bearer credential")
        if re.search(r"\b(sk|pk|cpk|ghp|xox[bp])[-_][A-Za-z0-9]{12,}", without_refs):
            found.append(f"{path}: an API key")
        if re.search(r"[A-Za-z0-9+/_-]{40,}", without_refs):
            found.append(f"{path}: a long random-looking string")
        if re.search(r"(?:\b[a-z]{3,8}\b ){11,}\b[a-z]{3,8}\b", without_refs):
            found.append(f"{path}: a mnemonic-like word sequence")
        userinfo = re.search(r"://([^/\s@]*)@", re.sub(r"\$\{[^}]*\}", "\0", node))
        if userinfo and userinfo.group(1).partition(":")[2] not in ("", "\0"):
            found.append(f"{path}: a URL with a literal password")
    return found


# --------------------------------------------------------------------------- compose


class TestComposeServices:
    def test_every_service_is_defined(self, services: dict[str, dict[str, Any]]) -> None:
        assert {"redis", "postgres", *APP_SERVICES} <= set(services)

    def test_redis_is_pinned_alpine_with_ping_healthcheck_and_volume(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        redis = services["redis"]
        assert re.fullmatch(r"redis:7(\.\d+)*-alpine", redis["image"])
        assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
        assert "redis-data:/data" in redis["volumes"]
        assert "redis-data" in compose["volumes"]

    def test_postgres_is_pinned_alpine_with_pg_isready_and_volume(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        postgres = services["postgres"]
        assert re.fullmatch(r"postgres:16(\.\d+)*-alpine", postgres["image"])
        test = postgres["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and test[1].startswith("pg_isready ")
        assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
        assert "postgres-data" in compose["volumes"]
        env = postgres["environment"]
        for name in ("POSTGRES_USER", "POSTGRES_DB"):
            assert re.fullmatch(rf"\$\{{{name}:-[a-z_]+\}}", env[name]), name
        # No default password: compose refuses to start without one.
        assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", env["POSTGRES_PASSWORD"])

    @pytest.mark.parametrize(
        ("service", "role"), [("gateway", "gateway"), ("pipeline", "pipeline"), ("beat", "beat")]
    )
    def test_app_healthchecks_run_the_role_check(
        self, services: dict[str, dict[str, Any]], service: str, role: str
    ) -> None:
        check = services[service]["healthcheck"]
        assert check["test"] == ["CMD", "python", "/app/compose/healthcheck.py", role]
        assert not check.get("disable", False)

    def test_one_shot_migrate_waits_for_healthy_postgres_and_never_restarts(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        migrate = services["migrate"]
        assert migrate["command"] == ["python", "-m", "shared.db.migrate"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert migrate["restart"] == "no"
        assert migrate["healthcheck"] == {"disable": True}

    @pytest.mark.parametrize("service", WAITING_SERVICES)
    def test_app_services_wait_for_healthy_redis_and_finished_migrations(
        self, services: dict[str, dict[str, Any]], service: str
    ) -> None:
        depends = services[service]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"

    @pytest.mark.parametrize("service", LONG_RUNNING)
    def test_long_running_services_restart(
        self, services: dict[str, dict[str, Any]], service: str
    ) -> None:
        assert services[service]["restart"] in ("unless-stopped", "always")

    def test_commands_match_the_procfile(self, services: dict[str, dict[str, Any]]) -> None:
        entries = procfile()
        assert {"gateway", "pipeline", "beat"} <= set(entries)
        for name, command in entries.items():
            assert services[name]["command"] == command, name
        assert entries["beat"][:5] == ["celery", "-A", "pipeline.schedule", "worker", "--beat"]

    def test_pipeline_beat_and_migrate_share_the_pipeline_image(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        images = {services[name]["image"] for name in ("pipeline", "beat", "migrate")}
        assert len(images) == 1 and images.pop().startswith("taostake-pipeline:")
        for name in ("pipeline", "beat", "migrate"):
            assert services[name]["build"]["dockerfile"] == "Dockerfile.pipeline"
        assert services["gateway"]["build"]["dockerfile"] == "Dockerfile.gateway"


class TestComposeSettings:
    @pytest.mark.parametrize("service", APP_SERVICES)
    def test_env_file_is_optional_dotenv(
        self, services: dict[str, dict[str, Any]], service: str
    ) -> None:
        assert services[service]["env_file"] == [{"path": ".env", "required": False}]

    @pytest.mark.parametrize("service", APP_SERVICES)
    def test_urls_point_at_the_compose_services(
        self, services: dict[str, dict[str, Any]], service: str
    ) -> None:
        env = services[service]["environment"]
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", env["REDIS_URL"])
        assert re.fullmatch(
            r"postgres://\$\{POSTGRES_USER:-[a-z_]+\}:\$\{POSTGRES_PASSWORD:\?[^}]+\}"
            r"@postgres:5432/\$\{POSTGRES_DB:-[a-z_]+\}",
            env["DATABASE_URL"],
        )

    def test_database_url_uses_the_postgres_service_credentials(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        pg = services["postgres"]["environment"]
        url = services["gateway"]["environment"]["DATABASE_URL"]
        assert url == (
            f"postgres://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{pg['POSTGRES_DB']}"
        )

    def test_gateway_listens_on_all_interfaces_inside_and_publishes_8000(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        gateway = services["gateway"]
        assert gateway["environment"]["HOST"] == "0.0.0.0"
        assert str(gateway["environment"]["PORT"]) == "8000"
        assert [port.rsplit(":", 1)[1] for port in gateway["ports"]] == ["8000"]
        assert gateway["ports"][0].startswith("${GATEWAY_BIND:-127.0.0.1}:")

    def test_pipeline_can_scale(self, services: dict[str, dict[str, Any]]) -> None:
        pipeline = services["pipeline"]
        # A fixed name, hostname or host port would make a second replica collide.
        for key in ("container_name", "hostname", "ports"):
            assert key not in pipeline, key

    def test_wallet_is_mounted_read_only_where_wallet_path_points(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        pipeline = services["pipeline"]
        mounts = [m for m in pipeline["volumes"] if isinstance(m, dict) and m["type"] == "bind"]
        assert len(mounts) == 1
        wallet = mounts[0]
        assert wallet["source"] == "${WALLET_DIR:-~/.bittensor/wallets}"
        assert wallet["target"] == pipeline["environment"]["WALLET_PATH"] == "/wallets"
        assert wallet["read_only"] is True

    def test_no_service_mounts_a_wallet_writable(self, services: dict[str, dict[str, Any]]) -> None:
        checked = 0
        for name, service in services.items():
            for mount in service.get("volumes", []):
                if isinstance(mount, str):
                    source, target, *mode = mount.split(":")
                    if "wallet" in f"{source}{target}".lower():
                        checked += 1
                        assert mode and "ro" in mode[0].split(","), name
                elif "wallet" in f"{mount.get('source')}{mount['target']}".lower():
                    checked += 1
                    assert mount.get("read_only") is True, name
        assert checked >= 1

    def test_event_signing_key_is_required_where_events_flow(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        """Gateway, pipeline and beat publish or consume signed events; compose refuses to
        start them without the key instead of letting them crash (or run unsigned)."""
        for service in WAITING_SERVICES:
            value = services[service]["environment"]["EVENT_SIGNING_KEY"]
            assert value.startswith("${EVENT_SIGNING_KEY:?") and VAR_REF.match(value), service
            assert "set EVENT_SIGNING_KEY in .env" in value
        assert "EVENT_SIGNING_KEY" not in services["migrate"]["environment"]

    def test_no_secret_values_in_the_compose_file(self, compose: dict[str, Any]) -> None:
        assert secret_findings(compose) == []
        for service in compose["services"].values():
            for name in APP_SECRETS:
                # Only ever blanked here (they come from .env); never given a value.
                assert service.get("environment", {}).get(name, "") == "", name

    def test_secret_detector_catches_planted_secrets(self, compose: dict[str, Any]) -> None:
        planted = load_compose()
        env = planted["services"]["gateway"]["environment"]
        env["CHUTES_API_KEY"] = "cpk_" + "a1b2c3d4e5f6a7b8c9d0"
        env["DATABASE_URL"] = "postgres://taostake:hunter2@postgres:5432/taostake"
        env["NOTE"] = " ".join(["abandon"] * 11 + ["about"])
        planted["services"]["pipeline"]["environment"]["WALLET_PASSWORD"] = "${WALLET_PASSWORD}"
        findings = "\n".join(secret_findings(planted))
        assert "gateway.environment.CHUTES_API_KEY: a secret-named setting" in findings
        assert "gateway.environment.CHUTES_API_KEY: an API key" in findings
        assert "gateway.environment.DATABASE_URL: a URL with a literal password" in findings
        assert "gateway.environment.NOTE: a mnemonic-like word sequence" in findings
        assert "WALLET_PASSWORD" not in findings  # a variable reference is not a secret


def _compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), else a standalone Compose v2+ `docker-compose`.

    Compose v1 (Debian's docker-compose 1.29) predates `env_file: required`, so it is no
    judge of this file and is not used.
    """
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for found in (
        shutil.which("docker-compose"),
        str(Path(sys.executable).parent / "docker-compose"),
    ):
        if found and Path(found).is_file():
            candidates.append([found])
    for command in candidates:
        result = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False
        )
        major = result.stdout.strip().lstrip("v").split(".")[0]
        if result.returncode == 0 and major.isdigit() and int(major) >= 2:
            return command
    return None


COMPOSE_COMMAND = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE_COMMAND is None,
    reason="Docker Compose v2+ is not installed (neither `docker compose` nor a v2 "
    "`docker-compose`); the parsing tests above still ran",
)


@needs_compose
class TestDockerComposeConfig:
    """`docker compose config` validates without an engine; run it as a fresh clone would."""

    @staticmethod
    def _config(
        project_dir: Path,
        *args: str,
        signing_key: str | None = "k" * 64,
        redis_password: str | None = "r" * 32,
        postgres_password: str | None = "p" * 32,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        for name in ("POSTGRES_USER", "POSTGRES_DB", "WALLET_DIR"):
            env.pop(name, None)
        for name, value in (
            ("EVENT_SIGNING_KEY", signing_key),
            ("REDIS_PASSWORD", redis_password),
            ("POSTGRES_PASSWORD", postgres_password),
        ):
            env.pop(name, None)
            if value is not None:
                env[name] = value
        assert COMPOSE_COMMAND is not None
        command = [*COMPOSE_COMMAND, "--project-directory", str(project_dir)]
        command += ["-f", str(COMPOSE_FILE), "config", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    def test_quiet_config_passes_without_dotenv(self, tmp_path: Path) -> None:
        result = self._config(tmp_path, "--quiet")
        assert result.returncode == 0, result.stderr

    def test_config_refuses_without_the_event_signing_key(self, tmp_path: Path) -> None:
        result = self._config(tmp_path, "--quiet", signing_key=None)
        assert result.returncode != 0
        assert "set EVENT_SIGNING_KEY in .env" in result.stderr

    @pytest.mark.parametrize("missing", ["REDIS_PASSWORD", "POSTGRES_PASSWORD"])
    def test_config_refuses_without_a_database_password(self, tmp_path: Path, missing: str) -> None:
        kwargs = {"redis_password" if missing == "REDIS_PASSWORD" else "postgres_password": None}
        result = self._config(tmp_path, "--quiet", **kwargs)  # type: ignore[arg-type]
        assert result.returncode != 0
        assert f"set {missing} in .env" in result.stderr

    def test_pipeline_secrets_reach_only_the_pipeline(self, tmp_path: Path) -> None:
        secrets = {
            "WALLET_PASSWORD": "wallet-password-value",
            "WALLET_MNEMONIC": "word " * 11 + "word",
            "DATURA_API_KEY": "dt-key-value-0001",
            "CHUTES_API_KEY": "cpk-key-value-0002",
        }
        token = "gateway-only-token-0123456789"
        dotenv = "".join(f"{k}={v}\n" for k, v in secrets.items()) + f"API_TOKENS={token}\n"
        (tmp_path / ".env").write_text(dotenv)
        result = self._config(tmp_path, "--format", "json")
        assert result.returncode == 0, result.stderr
        services = json.loads(result.stdout)["services"]
        for name, value in secrets.items():
            assert services["pipeline"]["environment"][name] == value
            for other in ("gateway", "beat", "migrate"):
                assert services[other]["environment"][name] == "", (other, name)
        assert services["gateway"]["environment"]["API_TOKENS"] == token
        for other in ("pipeline", "beat", "migrate"):
            assert services[other]["environment"]["API_TOKENS"] == "", other
        rendered = {n: json.dumps(services[n]) for n in ("gateway", "beat", "migrate")}
        for name, text in rendered.items():
            for value in secrets.values():
                assert value not in text, name

    def test_redis_requires_the_password_every_client_uses(self, tmp_path: Path) -> None:
        result = self._config(tmp_path, "--format", "json", redis_password="s3cr3t" * 6)
        assert result.returncode == 0, result.stderr
        services = json.loads(result.stdout)["services"]
        redis = services["redis"]
        assert "--requirepass" in " ".join(redis["command"])
        assert "s3cr3t" not in " ".join(redis["command"])  # from its environment, not argv
        assert redis["environment"]["REDIS_PASSWORD"] == "s3cr3t" * 6
        for name in ("gateway", "pipeline", "beat", "migrate"):
            url = services[name]["environment"]["REDIS_URL"]
            assert url == f"redis://:{'s3cr3t' * 6}@redis:6379/0", name

    def test_quiet_config_passes_in_the_checkout(self) -> None:
        result = self._config(ROOT, "--quiet")
        assert result.returncode == 0, result.stderr

    def test_dotenv_reaches_the_app_but_compose_overrides_win(self, tmp_path: Path) -> None:
        dotenv = (ROOT / ".env.example").read_text()
        dotenv += "\nPOSTGRES_PASSWORD=from-dotenv\nWALLET_DIR=/srv/wallets\n"
        dotenv += "API_TOKENS=static-token-from-dotenv-01\n"
        dotenv += "EVENT_SIGNING_KEY=key-from-dotenv-0123456789\n"
        (tmp_path / ".env").write_text(dotenv)
        result = self._config(
            tmp_path, "--format", "json", signing_key=None, postgres_password=None
        )
        assert result.returncode == 0, result.stderr
        services = json.loads(result.stdout)["services"]
        gateway, pipeline = services["gateway"]["environment"], services["pipeline"]
        assert gateway["API_TOKENS"] == "static-token-from-dotenv-01"  # from .env
        assert gateway["HOST"] == "0.0.0.0"  # .env.example says 127.0.0.1: compose wins
        assert gateway["REDIS_URL"] == f"redis://:{'r' * 32}@redis:6379/0"
        assert gateway["DATABASE_URL"].endswith(":from-dotenv@postgres:5432/taostake")
        assert pipeline["environment"]["WALLET_PATH"] == "/wallets"
        for service in ("gateway", "pipeline", "beat"):
            key = services[service]["environment"]["EVENT_SIGNING_KEY"]
            assert key == "key-from-dotenv-0123456789", service
        wallet = next(m for m in pipeline["volumes"] if m["type"] == "bind")
        assert (wallet["source"], wallet["target"], wallet["read_only"]) == (
            "/srv/wallets",
            "/wallets",
            True,
        )
        assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "from-dotenv"


# --------------------------------------------------------------------------- Dockerfiles


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> tuple[str, list[list[Instruction]]]:
    role = str(request.param)
    return role, parse_dockerfile(DOCKERFILES[role])


class TestDockerfiles:
    def test_multi_stage_on_a_pinned_slim_python(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        _, stages = image
        assert len(stages) >= 2
        bases = [stage[0].words()[0] for stage in stages]
        for base in bases:
            assert BASE_IMAGE.match(base), base
        assert len(set(bases)) == 1  # the venv's interpreter path is the same in every stage

    def test_dependencies_install_in_a_cached_layer_before_the_code(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        _, stages = image
        builder = stages[0]
        copies = [i for i in builder if i.cmd == "COPY"]
        assert [i.flags_and_operands()[1][0] for i in copies] == ["requirements.txt"]
        cmds = [(i.cmd, i.args) for i in builder]
        copy_at = next(n for n, (c, a) in enumerate(cmds) if c == "COPY")
        install_at = next(n for n, (c, a) in enumerate(cmds) if "pip install -r" in a)
        assert copy_at < install_at
        assert any("gcc" in a for c, a in cmds if c == "RUN" and "apt-get install" in a)

    def test_runtime_gets_the_venv_and_no_compiler(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        _, stages = image
        runtime = stages[-1]
        venv = [i for i in runtime if i.cmd == "COPY" and "--from=builder" in i.words()]
        assert [i.flags_and_operands()[1] for i in venv] == [["/opt/venv", "/opt/venv"]]
        assert not any("gcc" in i.args for i in runtime if i.cmd == "RUN")
        assert env_assignments(runtime)["PATH"].startswith("/opt/venv/bin:")

    def test_runs_as_a_fixed_non_root_user(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        _, stages = image
        runtime = stages[-1]
        users = [i.args for i in runtime if i.cmd == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0")
        last_user = max(n for n, i in enumerate(runtime) if i.cmd == "USER")
        assert all(i.cmd != "RUN" for i in runtime[last_user:])
        args = {
            i.args.partition("=")[0]: i.args.partition("=")[2] for i in runtime if i.cmd == "ARG"
        }
        assert args["APP_UID"] == "10001"
        assert any('--uid "${APP_UID}"' in i.args for i in runtime if i.cmd == "RUN")

    def test_environment_for_python_and_a_writable_home(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        _, stages = image
        runtime = stages[-1]
        env = env_assignments(runtime)
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["HOME"] == "/home/app"
        setup = " ".join(i.args for i in runtime if i.cmd == "RUN")
        assert "--home-dir /home/app --create-home" in setup
        assert 'chown -R "${APP_UID}:${APP_GID}" /home/app' in setup

    def test_any_host_gid_builds(self, image: tuple[str, list[list[Instruction]]]) -> None:
        """APP_GID=20 (macOS users' group) exists in Debian as "dialout": groupadd must not
        run for it, and the user takes the gid itself rather than a group named app."""
        _, stages = image
        runtime = stages[-1]
        setup = " ".join(i.args for i in runtime if i.cmd == "RUN")
        assert 'if ! getent group "${APP_GID}" >/dev/null; then' in setup
        assert '--gid "${APP_GID}"' in setup.split("useradd", 1)[1]
        assert "--non-unique" in setup
        users = [i.args for i in runtime if i.cmd == "USER"]
        assert users[-1] == "${APP_UID}:${APP_GID}"

    def test_healthcheck_runs_the_role_check(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        role, stages = image
        checks = [i for i in stages[-1] if i.cmd == "HEALTHCHECK"]
        assert len(checks) == 1
        assert " CMD [" in f" {checks[0].args}"
        assert checks[0].exec_form() == ["python", "/app/compose/healthcheck.py", role]

    def test_default_command_is_the_procfile_line(
        self, image: tuple[str, list[list[Instruction]]]
    ) -> None:
        role, stages = image
        cmd = [i for i in stages[-1] if i.cmd == "CMD"]
        assert cmd[-1].exec_form() == procfile()[role]

    def test_copies_only_its_own_code(self, image: tuple[str, list[list[Instruction]]]) -> None:
        role, stages = image
        sources: list[str] = []
        for stage in stages:
            assert not [i for i in stage if i.cmd == "ADD"]
            for copy in (i for i in stage if i.cmd == "COPY"):
                flags, operands = copy.flags_and_operands()
                if not any(f.startswith("--from=") for f in flags):
                    sources.extend(operands[:-1])
        assert sorted(sources) == sorted(
            [
                "requirements.txt",
                "pyproject.toml",  # the version `--version` and the API report
                "shared/",
                f"{role}/",
                "compose/healthcheck.py",
            ]
        )
        for source in sources:
            lowered = source.lower()
            assert ".env" not in lowered and "wallet" not in lowered and source != "."

    def test_no_secret_is_baked_in(self, image: tuple[str, list[list[Instruction]]]) -> None:
        _, stages = image
        for stage in stages:
            names = list(env_assignments(stage))
            names += [i.args.partition("=")[0] for i in stage if i.cmd == "ARG"]
            assert not [n for n in names if SECRET_NAME.search(n)], names

    def test_gateway_image_listens_on_8000_on_all_interfaces(self) -> None:
        runtime = parse_dockerfile(DOCKERFILES["gateway"])[-1]
        env = env_assignments(runtime)
        assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "8000")
        assert [i.args for i in runtime if i.cmd == "EXPOSE"] == ["8000"]

    def test_pipeline_image_defaults_wallet_path_to_the_mount_point(self) -> None:
        runtime = parse_dockerfile(DOCKERFILES["pipeline"])[-1]
        assert env_assignments(runtime)["WALLET_PATH"] == "/wallets"


class TestDockerignore:
    @pytest.mark.parametrize(
        "path",
        [
            ".env",
            ".env.production",
            "shared/.env",
            ".venv/bin/python",
            "data/taostake.sqlite3",
            "wallets/default/coldkey",
            "pipeline/wallets/default/coldkey",
            "tests/test_compose.py",
            ".git/HEAD",
            "gateway/__pycache__/app.cpython-311.pyc",
            "docker-compose.yml",
        ],
    )
    def test_kept_out_of_the_build_context(
        self, ignore_rules: list[tuple[bool, re.Pattern[str]]], path: str
    ) -> None:
        assert dockerignored(path, ignore_rules)

    def test_every_file_the_images_copy_is_sent(
        self, ignore_rules: list[tuple[bool, re.Pattern[str]]]
    ) -> None:
        needed = ["requirements.txt", "pyproject.toml", "compose/healthcheck.py"]
        for package in ("gateway", "pipeline", "shared"):
            needed += [
                p.relative_to(ROOT).as_posix()
                for p in (ROOT / package).rglob("*.py")
                if "__pycache__" not in p.parts
            ]
        assert "shared/chain/wallet.py" in needed and "gateway/app.py" in needed
        assert [p for p in needed if dockerignored(p, ignore_rules)] == []

    def test_the_evaluator_follows_dockers_last_match_rule(self) -> None:
        rules = dockerignore_rules("*\n!keep/\nkeep/**/secret\n")
        assert dockerignored("other.txt", rules)
        assert not dockerignored("keep/a/b.py", rules)
        assert dockerignored("keep/a/secret", rules)
        assert dockerignored("keep/a/secret/inner.txt", rules)


# --------------------------------------------------------------------------- healthcheck.py


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def healthcheck() -> ModuleType:
    return _load_healthcheck()


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def http_port() -> Iterator[tuple[int, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {"status": 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def process_with() -> Iterator[Any]:
    """Start a sleeping process whose command line carries the given markers."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*markers: str) -> int:
        code = "import time; time.sleep(60)"
        proc = subprocess.Popen([sys.executable, "-c", code, *markers])
        started.append(proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 10
        while markers[-1].encode() not in cmdline.read_bytes():  # until exec has happened
            assert time.monotonic() < deadline, "the helper process did not start"
            time.sleep(0.01)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestHealthcheckScript:
    def test_gateway_healthy_when_healthz_answers_200(
        self,
        healthcheck: ModuleType,
        http_port: tuple[int, type[_Answer]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        port, handler = http_port
        monkeypatch.setenv("PORT", str(port))
        assert healthcheck.check_gateway() is None
        handler.status = 503
        assert healthcheck.check_gateway() == "GET /healthz answered 503"

    def test_gateway_unhealthy_when_nothing_listens(
        self, healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        port = _closed_port()
        monkeypatch.setenv("PORT", str(port))
        problem = healthcheck.check_gateway()
        assert problem is not None and problem.startswith(f"GET /healthz on port {port} failed")

    def test_pipeline_needs_a_fresh_key_from_a_live_worker_of_this_host(
        self,
        healthcheck: ModuleType,
        redis_url: str,
        process_with: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        host = f"hc-{secrets.token_hex(4)}"
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setattr(healthcheck, "socket", SimpleNamespace(gethostname=lambda: host))
        client = sync_redis.Redis.from_url(redis_url)
        key = f"health:worker:{host}-4242-abc123"
        other = f"health:worker:other{host}-1-x"
        try:
            assert "no live worker" in healthcheck.check_pipeline()
            worker_pid = process_with("-m", "pipeline", "run")
            client.set(other, json.dumps({"pid": worker_pid, "stopping": False}), ex=30)
            assert "no live worker" in healthcheck.check_pipeline()  # another container's key
            client.set(key, json.dumps({"pid": worker_pid, "stopping": True}), ex=30)
            assert "no live worker" in healthcheck.check_pipeline()  # draining
            client.set(key, json.dumps({"pid": worker_pid, "stopping": False}), ex=30)
            assert healthcheck.check_pipeline() is None
            unrelated_pid = process_with("unrelated")
            client.set(key, json.dumps({"pid": unrelated_pid, "stopping": False}), ex=30)
            assert "no live worker" in healthcheck.check_pipeline()  # pid is not a worker
        finally:
            client.delete(key, other)
            client.close()

    def test_worker_names_its_health_key_after_the_hostname(self, healthcheck: ModuleType) -> None:
        """The pipeline check finds its own worker by hostname: the worker must keep that."""
        from pipeline.worker import default_consumer
        from shared.constants import KEY_WORKER_HEALTH

        assert default_consumer().startswith(f"{socket.gethostname()}-")
        assert healthcheck.KEY_WORKER_HEALTH == KEY_WORKER_HEALTH == "health:worker:"

    def test_pipeline_and_beat_unhealthy_without_redis(
        self, healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
        assert healthcheck.check_pipeline().startswith("cannot read worker health from Redis")
        assert healthcheck.check_beat().startswith("Redis (Celery broker) does not answer")

    def test_process_scan_finds_processes_by_command_line(
        self, healthcheck: ModuleType, process_with: Any
    ) -> None:
        marker = secrets.token_hex(8)
        assert healthcheck._processes_matching(b"celery", marker.encode()) == []
        pid = process_with("celery", "-A", marker)
        assert healthcheck._processes_matching(b"celery", marker.encode()) == [pid]
        assert healthcheck._processes_matching(b"beat", marker.encode()) == []

    def test_beat_needs_redis_and_a_celery_process(
        self, healthcheck: ModuleType, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REDIS_URL", redis_url)
        seen: list[tuple[bytes, ...]] = []

        def no_process(*markers: bytes) -> list[int]:
            seen.append(markers)
            return []

        monkeypatch.setattr(healthcheck, "_processes_matching", no_process)
        assert healthcheck.check_beat() == "no Celery process for pipeline.schedule is running"
        assert seen == [(b"celery", b"pipeline.schedule")]
        monkeypatch.setattr(healthcheck, "_processes_matching", lambda *markers: [4242])
        assert healthcheck.check_beat() is None

    def test_main_exit_codes(
        self, healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(healthcheck.CHECKS, "gateway", lambda: None)
        assert healthcheck.main(["gateway"]) == 0
        monkeypatch.setitem(healthcheck.CHECKS, "gateway", lambda: "down")
        assert healthcheck.main(["gateway"]) == 1
        assert healthcheck.main(["nonsense"]) == 1
        assert healthcheck.main([]) == 1
