"""Operator settings: one typed object built at start (from the command line) and passed down.

Nothing here reads the environment or a kubeconfig; `entry.main` builds the object from its
arguments and every other module receives it. Defaults are the production ones; tests
shorten the timers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sail_operator.policy import OperatorPolicy

MANAGED_BY = "sail-operator"
FINALIZER = "sail.dev/finalizer"  # declared for reference; the operator needs none (see handlers.py)
ANNOTATION_PREFIX = "sail.dev"


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the Kubernetes side of the operator is configured with."""

    namespaces: tuple[str, ...] = ()          # empty: cluster-wide (all namespaces)
    kubeconfig: str | None = None             # None: in-cluster service account
    context: str | None = None
    standalone: bool = True                   # no leader election (kopf itself never peers)
    lease_namespace: str = "default"          # where the leader-election Lease lives (not standalone)
    metrics_port: int | None = 8080
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    ports_file: str | None = None             # write the bound metrics/liveness ports here (tests use port 0)
    workload_service_account: str = "sail-workload"
    trainer_command: tuple[str, ...] = ("sail-trainer",)
    container_name: str = "trainer"
    cache_dir: str = "/var/cache/sail"
    cache_size_limit: str | None = None
    tmp_size_limit: str | None = None
    master_port: int = 29500
    resync_seconds: float = 30.0              # timer: re-run the level-based reconcile at least this often
    requeue_floor_seconds: float = 0.5        # never wake up sooner than this after a RequeueAfter
    watch_server_timeout: int = 300           # server-side watch timeout (seconds)
    watch_client_timeout: int = 330           # client-side inactivity timeout: reconnect a silent watch
    watch_connect_timeout: int = 30
    delete_finished_jobs: bool = True
    # Reconciles run the sync kubernetes client in threads; asyncio's default pool has only
    # cpu+4 threads, which serialises hundreds of runs behind API round trips (bench/operator_scale.py).
    reconcile_workers: int = 32
    policy: OperatorPolicy = field(default_factory=OperatorPolicy)

    @property
    def leader_election(self) -> bool:
        return not self.standalone
