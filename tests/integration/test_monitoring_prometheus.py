"""Monitoring against a real Prometheus: the operator on the kmock emulator, scraped the way the
chart's ServiceMonitor makes prometheus-operator scrape it, with the chart's own alert rules loaded.

Debian's `prometheus` server (the package that also gives promtool) scrapes two targets every
second: the operator process, driving runs that succeed, retry and fail in two namespaces, and a
stand-in for a second release of the operator (an idle operator's registry served over HTTP: the
emulator cannot host two operators without them fighting over the same runs). The scrape config
is derived from the rendered ServiceMonitor: its job name (`jobLabel`), the target labels
prometheus-operator adds (namespace, service, pod, endpoint) and its `honorLabels`.

The chart's rules are loaded with every `for:` set to 0s (the `for` durations are unit-tested
with promtool in tests/contract/promtool); alerts whose thresholds are hours are asserted silent.
Then every dashboard query is evaluated as Grafana would (variables from their label_values
queries, macros replaced) and must return data labelled with the runs' namespaces. Finally the
operator is SIGKILLed: SAILOperatorDown fires for its release only.

Issue 14 items 8 (namespace label through the ServiceMonitor), 9 (increase() sees the first
event) and 10 (operator down, one of two releases, any job name).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from sail_api.phases import Phase
from sail_operator.metrics import OperatorMetrics
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.contract.test_chart_render import RELEASE_NAMESPACE, objects_of_kind, render_objects
from tests.contract.test_dashboard_queries import load_dashboard, panel_queries
from tests.peers.kube import JobController, Scripted, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed: apt-get install prometheus"),
]

RUN_NAMESPACES = {"team-a", "team-b"}
SECOND_RELEASE_NAMESPACE = "sail-b"
CHART_VALUES = {"metrics": {"serviceMonitor": {"enabled": True}}, "prometheusRule": {"enabled": True}}
# Grafana's macros, sized for a test that lasts about a minute and scrapes every second.
MACROS = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "10m"}
# Metrics whose `namespace` label is a run's namespace (not the scrape target's).
RUN_SCOPED = ("sail_run_", "sail_gpu_seconds_total")
HOLD = "hold"  # a run whose Job never finishes: "time in current phase" has something to show


class HoldingJobController(JobController):
    """The emulator's Job controller, except that Jobs of the run `hold` stay running forever."""

    def _play(self, job: dict[str, Any]) -> None:
        if job["metadata"]["labels"]["sail.dev/run"] == HOLD:
            return
        super()._play(job)


class StaticMetrics(ThreadingHTTPServer):
    """A second release's operator, idle: serves a fresh operator registry's /metrics body."""

    def __init__(self) -> None:
        body = generate_latest(OperatorMetrics().registry)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]


def build_scrape_config(monitor: dict[str, Any], service: dict[str, Any],
                        targets: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """Pure: what prometheus-operator generates for the ServiceMonitor, with static targets.

    `targets`: release namespace -> (port, release name). Job = the Service's `jobLabel` label;
    target labels namespace/service/pod/endpoint as prometheus-operator sets them.
    """
    (endpoint,) = monitor["spec"]["endpoints"]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    return {
        "job_name": job,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint["path"],
        "static_configs": [
            {"targets": [f"127.0.0.1:{port}"],
             "labels": {"namespace": namespace, "service": f"{release}-sail-operator-metrics",
                        "pod": f"{release}-sail-operator-7d9f-x2x", "endpoint": endpoint["port"]}}
            for namespace, (port, release) in targets.items()
        ],
    }


def build_test_rules(rule_spec: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule's groups with every `for:` at 0s (alerts fire at the first true evaluation)."""
    groups = json.loads(json.dumps(rule_spec["groups"]))
    for group in groups:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    return {"groups": groups}


class Prometheus:
    """`prometheus` on a loopback port with a temporary TSDB; stopped by PID at teardown.

    Prometheus cannot report a port it picked itself, so a free port is chosen first; should another
    process take it in between, Prometheus exits at once and is started again on another port.
    """

    def __init__(self, workdir: Path, scrape: dict[str, Any], rules: dict[str, Any]) -> None:
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
                  "rule_files": [str(workdir / "rules.yaml")], "scrape_configs": [scrape]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.workdir = workdir
        for attempt in range(5):
            self.port = _unused_port()
            self.log = open(workdir / f"prometheus-{attempt}.log", "w")  # noqa: SIM115  (closed in stop)
            self.process = subprocess.Popen(
                [PROMETHEUS or "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=self.log, stderr=subprocess.STDOUT)
            wait_for(lambda: self.ready() or self.process.poll() is not None, 60, "prometheus to start")
            if self.process.poll() is None:
                return
            self.log.close()
        raise AssertionError(f"prometheus did not start: {(workdir / 'prometheus-4.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(20)
        self.log.close()

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name -> label sets of its firing alerts."""
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture
def second_release() -> Iterator[StaticMetrics]:
    server = StaticMetrics()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _script(job: dict[str, Any]) -> Scripted | None:
    name = job["metadata"]["name"]
    if name == build_job_name("flaky", 0, Phase.TRAIN, 1):
        return Scripted(exit_code=75, message="storage unreachable")  # infra: retried once
    if job["metadata"]["labels"]["sail.dev/run"] == "doomed":
        return Scripted(exit_code=1, message="trainer exploded")  # app: every attempt
    return None


def _dashboard_queries(prom: Prometheus) -> dict[str, str]:
    """Every panel query as Grafana sends it with the variables at "All" (a regex of their values)."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    namespaces = sorted(v for v in prom.api("label/namespace/values", **{"match[]": "sail_run_info"}))
    runs = sorted(prom.api("label/run/values", **{"match[]": f'sail_run_info{{namespace=~"{"|".join(namespaces)}"}}'}))
    assert "$namespace" in variables["run"]["query"]["query"]
    scorers = sorted(prom.api("label/scorer/values", **{"match[]": "sail_run_eval_score"}))
    substitutions = {**MACROS, "$namespace": "|".join(namespaces), "$run": "|".join(runs), "$scorer": "|".join(scorers)}
    queries = {}
    for title, expr in panel_queries(load_dashboard()).items():
        for macro, value in sorted(substitutions.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(macro, value)
        queries[title] = expr
    return queries


def test_alerts_and_dashboard_on_a_real_prometheus_scraping_the_operator(
        kube_cluster, operator_process, second_release, tmp_path):
    objects = render_objects(CHART_VALUES)
    (monitor,) = objects_of_kind(objects, "ServiceMonitor")
    (service,) = objects_of_kind(objects, "Service")
    (rule,) = objects_of_kind(objects, "PrometheusRule")
    op = operator_process().start()  # first: its metrics port may be known only once it serves
    scrape = build_scrape_config(monitor, service, {RELEASE_NAMESPACE: (op.metrics_port, "sail"),
                                                    SECOND_RELEASE_NAMESPACE: (second_release.port, "other")})
    prom = Prometheus(tmp_path, scrape, build_test_rules(rule["spec"]))
    # 1.5 s per Job: every state of a run (restarts 0, 1, 2, ...) is scraped at least once.
    controller = HoldingJobController(cluster=kube_cluster, workdir=tmp_path, delay=1.5, script=_script).start()
    try:
        wait_for(lambda: prom.value('count(up == 1)') == 2.0, 60, "both targets scraped")
        # The first scrape happened before any run event: increase() can see every event.
        # A round (judge trust) and an evaluate phase per iteration (the per-scorer panels).
        kube_cluster.create_run(build_run("ok", rounds=1, namespace="team-a",
                                          evaluation={"scorers": [{"name": "toy", "callable": "toy_scorers:size"}],
                                                      "count": 4}))
        kube_cluster.create_run(build_run("flaky", rounds=0, namespace="team-a"))
        kube_cluster.create_run(build_run("doomed", rounds=0, namespace="team-b",
                                          failurePolicy={"appRetries": 3}))
        kube_cluster.create_run(build_run(HOLD, rounds=0, namespace="team-b"))
        for namespace, name, state in (("team-a", "ok", "Succeeded"), ("team-a", "flaky", "Succeeded"),
                                       ("team-b", "doomed", "Failed"), ("team-b", HOLD, "Running")):
            wait_for(lambda n=namespace, r=name, s=state: kube_cluster.run_state(n, r) == s, 120, f"{name} {state}")
        wait_for(lambda: prom.value('sail_run_state{run="doomed", state="Failed"}') == 1.0, 30,
                 "the failure scraped")
        wait_for(lambda: prom.value('sum(sail_runs_finished_total)') == 3.0, 30, "the finished runs scraped")

        # Item 8: the runs' namespaces survive the ServiceMonitor's scrape.
        namespaces = set(prom.api("label/namespace/values", **{"match[]": "sail_run_info"}))
        assert namespaces == RUN_NAMESPACES, "sail_run_info's namespace must be the run's, not the target's"
        assert prom.query('sail_run_info{exported_namespace!=""}') == []

        # Item 9: each label set's first event counts (a series born at 1 would give 0 here).
        assert (prom.value('sum(increase(sail_runs_finished_total{result="failed"}[5m]))') or 0.0) >= 0.9
        assert (prom.value('sum(increase(sail_phase_attempts_total{cause="infra"}[5m]))') or 0.0) >= 0.9
        assert (prom.value('sum(increase(sail_phase_attempts_total{cause="app"}[5m]))') or 0.0) >= 3.5

        # The chart's alerts: each fires when it should and not otherwise.
        expected = {"SAILRunFailed", "SAILRunRetryStorm"}
        firing = wait_for(lambda: (lambda f: f if set(f) >= expected else None)(prom.firing()), 30,
                          "the failed run's alerts (rules are evaluated every second)")
        assert [(a["namespace"], a["run"]) for a in firing.pop("SAILRunFailed", [])] == [("team-b", "doomed")]
        assert [(a["namespace"], a["run"]) for a in firing.pop("SAILRunRetryStorm", [])] == [("team-b", "doomed")]
        assert firing == {}, f"no other alert while every operator is up and no threshold of hours is near: {firing}"

        # Every dashboard query returns data, labelled with the runs' namespaces where it has one.
        for title, expr in _dashboard_queries(prom).items():
            result = prom.query(expr)
            assert result, f"{title}: no data for {expr}"
            for sample in result:
                labels = sample["metric"]
                assert "exported_namespace" not in labels, f"{title}: {labels}"
                if "namespace" in labels and any(name in expr for name in RUN_SCOPED):
                    assert labels["namespace"] in RUN_NAMESPACES, f"{title}: {labels}"
        gpu = prom.query('sum by (namespace) (increase(sail_gpu_seconds_total[10m]))')
        assert {s["metric"]["namespace"] for s in gpu} == RUN_NAMESPACES, "GPU time booked to the runs' namespaces"

        # Item 10: one release down of two, the job name aside: the alert names that release only.
        op.kill()
        down = wait_for(lambda: prom.firing().get("SAILOperatorDown"), 60, "SAILOperatorDown to fire")
        assert [(a.get("namespace"), a.get("job")) for a in down] == [(RELEASE_NAMESPACE, "sail-operator")]
    except AssertionError:
        print(op.logs()[-4000:])
        raise
    finally:
        controller.stop()
        op.stop()
        prom.stop()
