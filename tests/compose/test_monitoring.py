"""The monitoring kit in compose/: alert rules (promtool), the Prometheus config, the Grafana
provisioning and dashboard, the opt-in `monitoring` profile, and docs/metrics.md.

Every metric name an alert, a panel or the docs mention must be one the processes export,
and every metric they export must be documented."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.core import Metric

import gateway.metrics  # noqa: F401  (registers the gateway's metrics)
import pipeline.metrics
from shared.settings import Settings
from tests.test_compose import COMPOSE_COMMAND, COMPOSE_FILE, ROOT, load_compose

COMPOSE_DIR = ROOT / "compose"
ALERTS = COMPOSE_DIR / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
GRAFANA = COMPOSE_DIR / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "taostake.json"
DOCS = ROOT / "docs" / "metrics.md"
METRIC_NAME = re.compile(r"\btaostake_[a-z0-9_]+")

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`: apt-get install -y "
    "prometheus); the rule files were still parsed and their metric names checked",
)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=60
    )


def _families() -> list[Metric]:
    found = list(REGISTRY.collect())
    found += list(pipeline.metrics.SNAPSHOT.describe())
    return [f for f in found if f.name.startswith("taostake_")]


def exported_samples() -> set[str]:
    """Every sample name the gateway and pipeline can export (counters with _total, ...)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
    }
    for family in _families():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def exported_families() -> dict[str, str]:
    """Family name as Prometheus shows it (counters with _total) -> type."""
    shown = {"counter": "_total", "info": "_info"}
    return {f.name + shown.get(f.type, ""): f.type for f in _families()}


def referenced(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


# --------------------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_parse_with_a_severity_summary_and_known_metrics() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    known = exported_samples()
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        unknown = referenced(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} reads metrics nobody exports: {unknown}"


def summed(expr: str) -> list[str]:
    """The argument of every sum() in a PromQL expression (a by/without clause skipped)."""
    found = []
    for match in re.finditer(r"\bsum\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(", expr):
        depth, start = 1, match.end()
        for index in range(start, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[index], 0)
            if depth == 0:
                found.append(expr[start:index])
                break
    return found


def test_the_sum_finder() -> None:
    assert summed("sum by (stream) (taostake_stream_group_lag) > 0") == [
        "taostake_stream_group_lag"
    ]
    assert summed("sum(rate(x[5m])) / sum without (a) (y)") == ["rate(x[5m])", "y"]
    assert summed("max(taostake_stream_length)") == []


def test_global_gauges_are_never_summed_in_alerts_or_panels() -> None:
    """Every replica reports the same global gauge: sum() would multiply it by the replicas."""
    global_prefixes = ("taostake_stream_", "taostake_stake_", "taostake_schedule_")
    texts = [rule["expr"] for rule in alert_rules()]
    texts += [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    checked = 0
    for expr in texts:
        for inner in summed(expr):
            checked += 1
            assert not any(p in inner for p in global_prefixes), expr
    assert checked >= 10


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@needs_promtool
def test_alerts_fire_and_stay_quiet_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    # The config names the rule file where the container mounts it; check it against ours.
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_gateway_and_every_pipeline_replica() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    [dns] = jobs["pipeline"]["dns_sd_configs"]
    assert dns["names"] == ["pipeline"] and dns["type"] == "A"
    pipeline_env = load_compose()["services"]["pipeline"]["environment"]
    assert dns["port"] == int(pipeline_env["METRICS_PORT"])
    assert "beat" not in jobs  # beat's runs are exposed by the pipeline


# --------------------------------------------------------------------------- Grafana


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_dashboard_reads_the_provisioned_data_source_and_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    known = exported_samples()
    seen: set[str] = set()
    for panel in panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = referenced(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert not names - known, (panel["title"], names - known)
            seen |= names
    # The list: lag, pending, deliveries, dead letters, stage latency, API latency and
    # errors, extrinsics by outcome, oldest unsettled age, skips by reason.
    for wanted in (
        "taostake_stream_group_lag",
        "taostake_stream_group_pending",
        "taostake_stage_deliveries_total",
        "taostake_stage_dead_letters_total",
        "taostake_stage_handler_duration_seconds_bucket",
        "taostake_external_request_duration_seconds_bucket",
        "taostake_external_requests_total",
        "taostake_stake_extrinsics",
        "taostake_stake_oldest_unsettled_age_seconds",
        "taostake_stake_skips",
    ):
        assert wanted in seen, wanted


def test_the_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/taostake.yml").read_text())
    [entry] = provider["providers"]
    grafana = load_compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts[entry["options"]["path"]] == "./compose/grafana/dashboards"


# --------------------------------------------------------------------------- compose profile


def test_monitoring_is_opt_in_loopback_only_and_mounts_its_config_read_only() -> None:
    services = load_compose()["services"]
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", service["image"]), service["image"]
        for port in service["ports"]:
            assert port.startswith(f"${{{name.upper()}_BIND:-127.0.0.1}}:"), port
        for mount in service["volumes"]:
            if mount.startswith("./"):
                source, _, mode = mount.split(":")
                assert mode == "ro", mount
                assert (ROOT / source).exists(), mount
    for name, service in services.items():
        if name not in ("prometheus", "grafana"):
            assert "profiles" not in service, name  # the default stack is unchanged
    pipeline = services["pipeline"]
    assert "ports" not in pipeline  # metrics reach the compose network only
    assert pipeline["environment"]["METRICS_HOST"] == "0.0.0.0"


@pytest.mark.skipif(COMPOSE_COMMAND is None, reason="Docker Compose v2+ is not installed")
def test_compose_config_with_the_monitoring_profile(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.update(EVENT_SIGNING_KEY="k" * 64, REDIS_PASSWORD="r" * 32, POSTGRES_PASSWORD="p" * 32)
    assert COMPOSE_COMMAND is not None
    base = [*COMPOSE_COMMAND, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    default = subprocess.run(
        [*base, "config", "--services"], capture_output=True, text=True, env=env, check=False
    )
    assert default.returncode == 0, default.stderr
    assert not {"prometheus", "grafana"} & set(default.stdout.split())
    full = subprocess.run(
        [*base, "--profile", "monitoring", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert full.returncode == 0, full.stderr
    services = json.loads(full.stdout)["services"]
    assert {"prometheus", "grafana"} <= set(services)
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for name in ("prometheus", "grafana"):
        assert [p["host_ip"] for p in services[name]["ports"]] == ["127.0.0.1"], name


# --------------------------------------------------------------------------- docs, settings


def test_every_exported_metric_is_documented_and_every_documented_one_exists() -> None:
    documented = referenced(DOCS.read_text())
    families = exported_families()
    missing = set(families) - documented
    assert not missing, f"docs/metrics.md does not describe: {sorted(missing)}"
    known = exported_samples() | set(families)
    stale = {name for name in documented if name not in known and not name.endswith("_")}
    assert not stale, f"docs/metrics.md describes metrics nobody exports: {sorted(stale)}"


def test_the_metrics_port_setting_and_its_example() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.metrics_port == pipeline.metrics.DEFAULT_PORT == 9108
    assert settings.metrics_host == "127.0.0.1"
    example = (ROOT / ".env.example").read_text()
    for line in ("METRICS_PORT=9108", "METRICS_HOST=127.0.0.1", "METRICS_SAMPLE_EVERY_S=15"):
        assert line in example.splitlines(), line
