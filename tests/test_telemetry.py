"""Alert rules, the Prometheus configuration and the Grafana dashboard.

The last test runs Debian's Prometheus on loopback against a real master and two workers (plus
node_exporter, the PostgreSQL exporter and RabbitMQ's own plugin) and checks that every target
is up and every dashboard query returns data: no Grafana server can be installed here, but
every query it would send can be asked of the Prometheus it would ask.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Processes, free_port, wait_for
from tests.pipeline import all_done, gen

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "prometheus"
DASHBOARD = ROOT / "grafana" / "dashboards" / "protheon.json"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboard", ROOT / "grafana" /
                                                  "build_dashboard.py")  # fmt: skip
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def _concrete(expr: str, rate_interval: str = "1m") -> str:
    """What Grafana would send: its variables replaced."""
    return expr.replace("$__rate_interval", rate_interval).replace('"$host"', '".*"')


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@needs_promtool
def test_prometheus_config_and_rules_check() -> None:
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", "rules/protheon.rules.yml")
    assert rules.returncode == 0 and "7 rules found" in rules.stdout, rules.stdout + rules.stderr


@needs_promtool
def test_alert_rules_pass_their_unit_tests() -> None:
    result = _promtool("test", "rules", "tests/protheon.test.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_cover_every_alert() -> None:
    alerts = {line.split(":", 1)[1].strip()
              for line in (PROMETHEUS / "rules" / "protheon.rules.yml").read_text().splitlines()
              if line.strip().startswith("- alert:")}  # fmt: skip
    tested = (PROMETHEUS / "tests" / "protheon.test.yml").read_text()
    assert alerts and all(f"alertname: {alert}" in tested for alert in alerts)


def test_dashboard_json_is_what_the_builder_makes() -> None:
    assert DASHBOARD.read_text() == _builder().render(), "run: make dashboard"


def test_every_panel_has_a_unit_and_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels():
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            if "rate(" in target["expr"]:
                assert "[$__rate_interval]" in target["expr"], target["expr"]


@needs_promtool
def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses PromQL when it checks rules: one recording rule per panel query."""
    rules = [{"record": f"panel:query_{i}", "expr": _concrete(target["expr"])}
             for i, target in enumerate(t for p in _panels() for t in p["targets"])]  # fmt: skip
    path = tmp_path / "panels.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(json.dumps({"groups": [{"name": "x", "rules": [
        {"record": "x", "expr": "sum(rate(x[1m])"}]}]}))  # fmt: skip
    assert _promtool("check", "rules", str(broken)).returncode != 0, "the check can fail"


def _query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _targets(port: int) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/targets"
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.load(response)["data"]["activeTargets"])


def _rabbitmq_plugin_port() -> int | None:
    try:
        urllib.request.urlopen("http://127.0.0.1:15692/metrics", timeout=5).close()
    except OSError:
        return None
    return 15692


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in
        ("prometheus", "prometheus-node-exporter", "prometheus-postgres-exporter")),
    reason="Debian's prometheus, prometheus-node-exporter, prometheus-postgres-exporter needed",
)  # fmt: skip
def test_prometheus_scrapes_a_real_run_and_every_panel_returns_data(
    processes: Processes, tmp_path: Path, pg_dsn: str
) -> None:
    rabbitmq_port = _rabbitmq_plugin_port()
    assert rabbitmq_port, "enable it: rabbitmq-plugins enable rabbitmq_prometheus (.ci/run does)"
    ports = {name: free_port() for name in ("grpc", "master", "node", "postgres", "prometheus")}
    worker_port = free_port()
    while worker_port + 1 in ports.values():
        worker_port = free_port()

    gen(processes, tmp_path / "in", "--files", "2", "--lines", "3000", "--seed", "51",
        "--bad-rate", "0.01", "--dup-rate", "0.02")  # fmt: skip
    processes.start("master", "master", "--input", str(tmp_path / "in"), "--workspace",
                    str(tmp_path / "ws"), "--listen", f"127.0.0.1:{ports['grpc']}",
                    "--chunk-lines", "300", "--metrics-port", str(ports["master"]))  # fmt: skip
    for index in (1, 2):
        processes.start(f"worker{index}", "worker", "--master", f"127.0.0.1:{ports['grpc']}",
                        "--concurrency", "1", "--worker-index", str(index),
                        "--metrics-port", str(worker_port))  # fmt: skip
    exporters = [
        subprocess.Popen(["prometheus-node-exporter",
                          f"--web.listen-address=127.0.0.1:{ports['node']}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["prometheus-postgres-exporter",
                          f"--web.listen-address=127.0.0.1:{ports['postgres']}"],
                         env={**os.environ, "DATA_SOURCE_NAME": pg_dsn.replace(
                             "dbname=", "sslmode=disable dbname=")},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip

    # Our configuration and rules, with this run's targets and a 1 s scrape interval.
    config = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, config)
    text = (config / "prometheus.yml").read_text()
    (config / "prometheus.yml").write_text(text.replace("scrape_interval: 15s",
                                                        "scrape_interval: 1s"))  # fmt: skip
    for job, targets in {
        "protheon-master": [ports["master"]], "protheon-worker": [worker_port, worker_port + 1],
        "node": [ports["node"]], "postgres": [ports["postgres"]], "rabbitmq": [rabbitmq_port],
    }.items():  # fmt: skip
        listed = ", ".join(f'"127.0.0.1:{port}"' for port in targets)
        (config / "targets" / f"{job}.yml").write_text(
            f"- targets: [{listed}]\n  labels: {{host: testhost}}\n"
        )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        wait_for(lambda: all_done(processes, 2), 90, "the load to finish")
        wait_for(
            lambda: len(_targets(ports["prometheus"])) == 6
            and all(t["health"] == "up" for t in _targets(ports["prometheus"])),
            60, "all six scrape targets to be up",
        )  # fmt: skip
        time.sleep(6)  # a few scrapes after the load, including the ledger gauges (every 5 s)
        empty = []
        for panel in _panels():
            for target in panel["targets"]:
                expr = _concrete(target["expr"], rate_interval="30s")
                if not _query(ports["prometheus"], expr):
                    empty.append(f"{panel['title']}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
        assert _query(ports["prometheus"], 'ALERTS{alertstate="firing"}') == []
        loaded = _query(ports["prometheus"], "max(protheon_loaded_pgcrs)")
        assert float(loaded[0]["value"][1]) > 5000
    finally:
        prometheus.terminate()
        for exporter in exporters:
            exporter.terminate()
        prometheus.wait(timeout=30)
        for exporter in exporters:
            exporter.wait(timeout=30)
