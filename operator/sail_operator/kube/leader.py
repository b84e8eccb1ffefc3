"""One active operator: leader election on a coordination.k8s.io/v1 Lease.

Without it, a second operator process (a scaled Deployment, a zombie pod on a partitioned
node, `sail operator` run from a laptop) re-runs finished phases and posts every event twice.
Two layers keep a second process harmless:
1. this Lease: only its holder reconciles (`sail operator --no-standalone`, what the chart runs);
2. the resourceVersion precondition on every status write (`act.patch_status`), always on: a
   process that planned from a stale SAILRun gets 409 Conflict before it creates anything.

The rules are client-go's (leaderelection): the holder renews every `renew_seconds`; another
process takes the Lease over only after it has seen the same record unchanged for
`lease_seconds` *by its own clock* (so clock skew between nodes does not matter); every write is
a merge patch with a resourceVersion precondition, so two contenders cannot both win; and the
holder stops acting as leader when it could not renew for `renew_deadline_seconds` (shorter
than the Lease), before anyone else may take over.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sail_operator.kube.act import ApiError, KubeApi

log = logging.getLogger(__name__)

LEASE_NAME = "sail-operator"
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"
    return f"{path}/{quote(name)}" if name else path


def default_lease_namespace() -> str:
    """The operator's own namespace in a pod (its ServiceAccount's), else `default`."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE_FILE) as stream:
            return stream.read().strip() or "default"
    except OSError:
        return "default"


def build_identity() -> str:
    """Unique per process: the pod name (hostname), the pid and a random suffix."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def format_micro_time(moment: datetime) -> str:
    """metav1.MicroTime as the API server writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compute_lease_move(spec: Mapping[str, Any], identity: str, unchanged_for: float, lease_seconds: float) -> str:
    """'renew' (ours), 'take' (free, or its holder stopped renewing), or 'wait' (someone else holds it).

    `unchanged_for`: how long *this process* has seen the same (holder, renewTime) record.
    """
    holder = spec.get("holderIdentity")
    if holder == identity:
        return "renew"
    if not holder:
        return "take"
    duration = float(spec.get("leaseDurationSeconds") or lease_seconds)
    return "take" if unchanged_for >= duration else "wait"


@dataclass
class LeaderElector:
    """Acquire and renew the Lease; `leading()` says whether this process may act now."""

    api: KubeApi
    namespace: str
    identity: str = field(default_factory=build_identity)
    name: str = LEASE_NAME
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0
    renew_deadline_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _renewed_at: float | None = None  # monotonic time of our last successful write
    _observed: tuple[Any, Any] | None = None  # (holder, renewTime) last seen
    _observed_at: float = 0.0

    def leading(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline_seconds

    def step(self) -> bool:
        """One round of acquire-or-renew; True when this process holds the Lease afterwards."""
        now = self.clock()
        try:
            lease = self.api.request("GET", lease_path(self.namespace, self.name))
        except ApiError as error:
            if error.status != 404:
                raise
            return self._write("POST", None, now, transitions=0)
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        move = compute_lease_move(spec, self.identity, now - self._observed_at, self.lease_seconds)
        if move == "wait":
            self._renewed_at = None
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if move == "renew" else 1)
        return self._write("PATCH", lease, now, transitions=transitions, keep_acquire=move == "renew")

    def _write(self, method: str, lease: Mapping[str, Any] | None, now: float, *, transitions: int,
               keep_acquire: bool = False) -> bool:
        stamp = format_micro_time(datetime.now(UTC))
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                "renewTime": stamp, "leaseTransitions": transitions}
        if not keep_acquire:
            spec["acquireTime"] = stamp
        try:
            if method == "POST":
                self.api.request("POST", lease_path(self.namespace), body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec})
            else:
                version = ((lease or {}).get("metadata") or {}).get("resourceVersion")
                self.api.request("PATCH", lease_path(self.namespace, self.name),
                                 body={"metadata": {"resourceVersion": version}, "spec": spec},
                                 content_type="application/merge-patch+json")
        except ApiError as error:
            if error.status != 409:
                raise
            self._renewed_at = None  # another process wrote first: it leads
            return False
        if not keep_acquire:
            log.warning("became the leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        self._renewed_at = now
        self._observed = (self.identity, stamp)
        self._observed_at = now
        return True

    def release(self) -> None:
        """On a clean shutdown: hand the Lease over at once instead of after `lease_seconds`."""
        if not self.leading():
            return
        try:
            lease = self.api.request("GET", lease_path(self.namespace, self.name))
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                version = (lease.get("metadata") or {}).get("resourceVersion")
                self.api.request("PATCH", lease_path(self.namespace, self.name),
                                 body={"metadata": {"resourceVersion": version}, "spec": {"holderIdentity": ""}},
                                 content_type="application/merge-patch+json")
        except (ApiError, OSError) as error:
            log.warning("could not release the Lease: %s", error)
        self._renewed_at = None
