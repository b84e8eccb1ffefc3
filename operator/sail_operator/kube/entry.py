"""`sail operator`: parse the command line into OperatorSettings and run kopf with our handlers.

    sail operator [--namespace NS ... | --all-namespaces] [--metrics-port 8080]
                  [--liveness http://0.0.0.0:8081/healthz] [--standalone | --no-standalone]
                  [--lease-namespace NS]
                  [--kubeconfig PATH [--context NAME]] [--policy-file policy.json]

Without --kubeconfig the in-cluster ServiceAccount is used. The kubeconfig is read only
here, explicitly, never from KUBECONFIG at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from sail_api.logsafety import quiet_credential_loggers
from sail_operator.kube.leader import default_lease_namespace
from sail_operator.kube.settings import OperatorSettings
from sail_operator.policy import OperatorPolicy, parse_policy

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail operator", description="Run the SAILRun operator (kopf).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="Namespace to serve (repeatable).")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Serve every namespace (default).")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Port of /metrics (0: a free port; -1: off).")
    parser.add_argument("--metrics-address", default="127.0.0.1",
                        help="Address /metrics listens on: loopback by default (it is unauthenticated); "
                             "the chart passes the pod IP.")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="Liveness endpoint URL ('' disables it; port 0: a free port).")
    parser.add_argument("--ports-file", help="Write the bound ports as JSON {\"metrics\": N, \"liveness\": M} "
                        "here once serving (useful with port 0).")
    parser.add_argument("--standalone", action=argparse.BooleanOptionalAction, default=True,
                        help="--standalone (default): no leader election, for exactly one operator process. "
                        "--no-standalone: only the holder of the coordination.k8s.io Lease "
                        "'sail-operator' reconciles (several replicas, or a stray second process, are safe).")
    parser.add_argument("--lease-namespace", default=None,
                        help="Namespace of the leader-election Lease (default: the pod's own namespace, "
                        "else 'default').")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: the in-cluster ServiceAccount).")
    parser.add_argument("--context", help="kubeconfig context.")
    parser.add_argument("--workload-service-account", default="sail-workload",
                        help="ServiceAccount of phase pods when the SAILRun sets none.")
    parser.add_argument("--policy-file", help="JSON file with the admin policy (chart: policy.* values).")
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="Re-reconcile every run this often.")
    parser.add_argument("--watch-server-timeout", type=int, default=300)
    parser.add_argument("--watch-client-timeout", type=int, default=330)
    parser.add_argument("--log-level", default="INFO")
    return parser


def load_policy(path: str | None) -> OperatorPolicy:
    """The admin policy from a JSON file with the chart's camelCase keys; unknown keys and values of
    the wrong type (a string where a list belongs) are an error naming the key."""
    if not path:
        return OperatorPolicy()
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    return parse_policy(data, path)


def build_settings(args: argparse.Namespace) -> OperatorSettings:
    return OperatorSettings(
        namespaces=tuple(args.namespace),
        kubeconfig=args.kubeconfig,
        context=args.context,
        standalone=args.standalone,
        lease_namespace=args.lease_namespace or default_lease_namespace(),
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        liveness_endpoint=args.liveness or None,
        ports_file=args.ports_file,
        workload_service_account=args.workload_service_account,
        resync_seconds=args.resync_seconds,
        watch_server_timeout=args.watch_server_timeout,
        watch_client_timeout=args.watch_client_timeout,
        policy=load_policy(args.policy_file),
    )


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_credential_loggers()
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not one INFO line per watch event
    try:
        settings = build_settings(args)
    except (OSError, ValueError) as error:
        log.error("bad operator configuration: %s", error)
        return 2

    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # before our metrics exist: no `_created` series beside the counters

    import kopf

    from sail_operator.kube.handlers import Controller, build_kopf_settings, build_registry
    from sail_operator.metrics import METRICS, start_metrics_server

    controller = Controller(settings=settings, metrics=METRICS)
    if settings.metrics_port is not None:
        server = start_metrics_server(settings.metrics_port, METRICS, addr=args.metrics_address)
        port = server[0].server_port if isinstance(server, tuple) else settings.metrics_port
        controller.ports["metrics"] = int(port)
        log.info("metrics on http://%s:%s/metrics", args.metrics_address, port)
    registry = build_registry(controller)
    kopf.run(
        loop=asyncio.new_event_loop(),
        registry=registry,
        settings=build_kopf_settings(settings),
        standalone=True,  # kopf never peers: leader election is ours (kube/leader.py), on a Lease
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=None,  # ours, bound race-free on kopf's loop (handlers.serve_liveness)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
