"""`sail operator`: parse the command line into OperatorSettings and run kopf with our handlers.

    sail operator [--namespace NS ... | --all-namespaces] [--metrics-port 8080]
                  [--liveness http://0.0.0.0:8081/healthz] [--standalone]
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
from sail_operator.kube.settings import OperatorSettings
from sail_operator.policy import OperatorPolicy

log = logging.getLogger(__name__)

_POLICY_FIELDS = {
    "allowedImages": "allowed_images",
    "allowedServiceAccounts": "allowed_service_accounts",
    "allowedPriorityClasses": "allowed_priority_classes",
    "allowedNodeSelectorKeys": "allowed_node_selector_keys",
    "allowedTolerationKeys": "allowed_toleration_keys",
    "requireS3Storage": "require_s3_storage",
    "maxTrainNodes": "max_train_nodes",
    "maxShards": "max_shards",
    "extraForbiddenEnv": "extra_forbidden_env",
    "maxRoundGpuHours": "max_round_gpu_hours",
    "maxRoundStorageBytes": "max_round_storage_bytes",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail operator", description="Run the SAILRun operator (kopf).")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="Namespace to serve (repeatable).")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Serve every namespace (default).")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Port of /metrics (0: a free port; -1: off).")
    parser.add_argument("--metrics-address", default="0.0.0.0", help="Address /metrics listens on.")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="kopf liveness endpoint URL ('' disables it).")
    parser.add_argument("--standalone", action="store_true", default=True,
                        help="No peering (one replica, Recreate strategy); the default.")
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
    """The admin policy from a JSON file with the chart's camelCase keys; unknown keys are an error."""
    if not path:
        return OperatorPolicy()
    data = json.loads(Path(path).read_text())
    unknown = sorted(set(data) - set(_POLICY_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown policy keys {unknown}; known: {sorted(_POLICY_FIELDS)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[_POLICY_FIELDS[key]] = tuple(value) if isinstance(value, list) else value
    return OperatorPolicy(**kwargs)


def build_settings(args: argparse.Namespace) -> OperatorSettings:
    return OperatorSettings(
        namespaces=tuple(args.namespace),
        kubeconfig=args.kubeconfig,
        context=args.context,
        standalone=args.standalone,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        liveness_endpoint=args.liveness or None,
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

    if settings.metrics_port is not None:
        server = start_metrics_server(settings.metrics_port, METRICS, addr=args.metrics_address)
        port = server[0].server_port if isinstance(server, tuple) else settings.metrics_port
        log.info("metrics on http://%s:%s/metrics", args.metrics_address, port)
    controller = Controller(settings=settings, metrics=METRICS)
    registry = build_registry(controller)
    kopf.run(
        loop=asyncio.new_event_loop(),
        registry=registry,
        settings=build_kopf_settings(settings),
        standalone=settings.standalone,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
