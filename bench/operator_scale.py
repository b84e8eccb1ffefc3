"""N concurrent SAILRuns on the Kubernetes emulator: Job-to-Job latency, reconcile CPU, memory.

Setup (the peers the integration tests use, `tests/peers/kube.py`):
- the kmock API emulator (`KubeCluster`) over HTTP on loopback, in this process; a subclass
  of its emulator stamps every request on arrival (`time.monotonic`) and, by default
  (`--emulator indexed`), finds stored objects by key / namespace / run label instead of
  kmock 0.8's scan of every object ever stored on each request (same answers: a unit test
  compares them), and filters LISTs by `labelSelector` as an API server does;
- the stand-in Job controller in "instant" mode: each Job the operator creates is reported
  succeeded (pods with phase summaries, Job status Complete, over HTTP) as soon as it is seen.
  With `--emulator indexed` the emulator tells it of each Job POST (it then GETs the Job)
  instead of it LISTing every live Job 10 times a second; `--emulator kmock` keeps the tests'
  polling controller and kmock's scans (the set-up of the figures before 2026-11-25 14:00);
- the operator as its own process (`python -m sail_operator.kube.entry`, `OperatorProcess`),
  with the production resync period (30 s) unless `--resync` says otherwise.

What the figure measures: the operator's reaction (watch event delivery, queueing for a
reconcile, the reconcile's API calls to this emulator, status write, Job create) on a machine
whose cores it shares with this emulator process. The emulator is Python too, so at large N its
CPU per request still adds to the latency; its CPU is reported beside the operator's.

N SAILRuns are created at once (step 0 + `--rounds` rounds each: 2 + 4 x rounds Jobs). For
every Job but a run's last, latency = arrival of the POST creating the run's next Job minus
arrival of the status PATCH that completed it: the operator's reaction time (watch event,
reconcile, status write, Job create), not the Job controller's. Reported: p50/p99/max
latency, the operator's CPU seconds per run and per Job (from /proc), its peak RSS
(VmHWM), reconciles counted by its own metrics (per handler, and per Job), and whether
p99 < 2 s held (the issue's target at N = 500 on 2 cores; reported, never asserted).

    python bench/operator_scale.py --n 10 100 500 --out bench-out/operator-scale.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (  # noqa: E402
    add_repo_paths,
    describe_machine,
    format_table,
    mib,
    percentile,
    read_cpu_seconds,
    read_proc_status,
    write_json,
)

add_repo_paths()
NS = "default"
TARGET_P99_S = 2.0


@dataclass
class Stamp:
    t: float
    kind: str  # "create" (Job POST), "complete" (Job status PATCH with Complete=True), "get_run" (GET of a SAILRun)
    name: str
    run: str | None = None


def match_selector(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector (`a=b,c=d`, what the operator sends) against an object's labels."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


RUN_LABEL = "sail.dev/run"


def selector_value(selector: str, key: str) -> str | None:
    """The value an equality-based selector requires for `key` (None: not constrained)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        name, _, value = term.partition("=")
        if name.strip() == key:
            return value.strip().lstrip("=")
    return None


def build_timed_emulator_class(server_side_selectors: bool, indexed: bool = True) -> type:
    """`SailKubeEmulator` whose requests are stamped on arrival (Job creates and completions).

    With `server_side_selectors`, LIST answers honour `labelSelector` as a real API server does
    (kmock 0.8 ignores it and returns every object of the namespace, so each reconcile's two
    child LISTs would grow with the number of runs and never-collected pods).

    With `indexed`, the emulator finds objects as an API server's storage does instead of
    kmock 0.8's scan of every object it ever stored (Jobs, pods, Events, soft-deleted ones
    included) on each GET, PATCH, POST and LIST: by key for one object, by (resource,
    namespace) for a LIST, by the `sail.dev/run` label (as set at creation) for a LIST that
    selects one run. The answers are the same; only the emulator's CPU per request changes,
    which at N = 500 had made the emulator, not the operator, the bound.
    """
    import kmock
    from kmock._internal.k8s import KubernetesEmulator

    from tests.peers.kube import SailKubeEmulator

    scan = KubernetesEmulator._KubernetesEmulator__get_objs  # kmock's own lookup (name-mangled)
    SAILRUNS_RESOURCE = kmock.resource("sail.dev", "v1alpha1", "sailruns")  # noqa: N806

    class TimedEmulator(SailKubeEmulator):
        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self.stamps: list[Stamp] = []
            self.created_jobs: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
            self._indexed_count = 0
            self._by_resource: dict[tuple[Any, str | None], list[Any]] = {}
            self._by_run: dict[tuple[Any, str | None, str | None], list[Any]] = {}
            # Garbage collection by index, as a real collector's dependency graph does: the peer's
            # own collector rescans every object per deletion (O(objects) x 3000 Job deletions).
            self._key_of_uid: dict[str, Any] = {}
            self._dependents: dict[str, list[Any]] = {}
            self._deleted_uids: list[str] = []

        def _refresh_index(self) -> dict[Any, Any]:
            """Index the keys kmock added since the last call (it only appends; a shrink rebuilds)."""
            store = self._objects._objects
            if len(store) < self._indexed_count:
                self._indexed_count, self._by_resource, self._by_run = 0, {}, {}
            new = len(store) - self._indexed_count
            if new > 0:
                for key in list(itertools.islice(reversed(store), new))[::-1]:
                    resource, namespace, _ = key
                    self._by_resource.setdefault((resource, namespace), []).append(key)
                    obj = store[key]
                    labels = (obj.last.raw.get("metadata") or {}).get("labels") or {}
                    self._by_run.setdefault((resource, namespace, labels.get(RUN_LABEL)), []).append(key)
                    meta = obj.last.raw.get("metadata") or {}
                    if meta.get("uid"):
                        self._key_of_uid[meta["uid"]] = key
                    for ref in meta.get("ownerReferences") or ():
                        self._dependents.setdefault(ref.get("uid"), []).append(key)
                self._indexed_count = len(store)
            return store

        def _KubernetesEmulator__get_objs(self, request: kmock.Request, strict: bool) -> list[Any]:
            if not indexed:
                return scan(self, request, strict)
            store = self._refresh_index()
            if request.name is not None and (strict or request.namespace is not None):
                obj = store.get((request.resource, request.namespace, request.name))
                return [obj] if obj is not None else []
            if request.name is None and request.namespace is not None:
                return [store[k] for k in self._by_resource.get((request.resource, request.namespace), ())]
            return scan(self, request, strict)  # cluster-wide LISTs and WATCHes: rare, kmock's own way

        def _before_delete(self, request: kmock.Request) -> bool:
            collect = super()._before_delete(request)
            if collect and indexed:
                obj = self._objects._objects.get((request.resource, request.namespace, request.name))
                uid = ((obj.last.raw.get("metadata") or {}).get("uid")) if obj is not None else None
                if uid:
                    self._deleted_uids.append(uid)
            return collect

        def _uid_live(self, store: dict[Any, Any], uid: str | None) -> bool:
            obj = store.get(self._key_of_uid.get(uid)) if uid else None
            return obj is not None and not obj.deleted and (obj.get("metadata") or {}).get("uid") == uid

        async def _collect(self) -> None:
            """The peer's collector (dependents whose owners are all gone, cascading), by index."""
            if not indexed:
                return await super()._collect()
            store = self._refresh_index()
            while self._deleted_uids:
                for key in self._dependents.pop(self._deleted_uids.pop(), ()):
                    obj = store.get(key)
                    if obj is None or obj.deleted:
                        continue
                    meta = obj.get("metadata") or {}
                    refs = meta.get("ownerReferences") or []
                    if not refs or any(self._uid_live(store, ref.get("uid")) for ref in refs):
                        continue  # orphaned by an Orphan deletion, or another owner still lives
                    obj.delete()
                    await self._buses[key[0]].put({"type": "DELETED", "object": obj.last.raw})
                    if meta.get("uid"):
                        self._deleted_uids.append(meta["uid"])

        async def _serve_list(self, request: kmock.Request) -> Any:
            selector = (request.params or {}).get("labelSelector")
            run = selector_value(selector, RUN_LABEL) if selector and server_side_selectors else None
            if indexed and run is not None and request.namespace is not None:
                async with self._lock:
                    store = self._refresh_index()
                    objs = [store[k] for k in self._by_run.get((request.resource, request.namespace, run), ())]
                    items = [o.raw for o in objs if not o.deleted]
                payload: Any = {"metadata": {"resourceVersion": "..."}, "items": items}
            else:
                payload = await super()._serve_list(request)
            if server_side_selectors and selector and isinstance(payload, dict):
                payload["items"] = [i for i in payload.get("items") or []
                                    if match_selector((i.get("metadata") or {}).get("labels") or {}, selector)]
            return payload

        def count_run_states(self, namespace: str, names: list[str]) -> dict[str, int]:
            """States of the named SAILRuns, read from the store: the bench's poll costs no HTTP or JSON."""
            store = self._objects._objects
            states: dict[str, int] = {}
            for name in names:
                obj = store.get((SAILRUNS_RESOURCE, namespace, name))
                raw = obj.last.raw if obj is not None and not obj.deleted else {}
                state = (raw.get("status") or {}).get("state") or "None"
                states[state] = states.get(state, 0) + 1
            return states

        async def _handle(self, request: kmock.Request) -> Any:
            now = time.monotonic()
            resource = request.resource
            created_job: tuple[str, str] | None = None
            if resource is not None and resource.plural == "sailruns" and request.action == kmock.action.FETCH \
                    and request.name and request.subresource is None:
                self.stamps.append(Stamp(now, "get_run", request.name, request.name))
            elif resource is not None and resource.plural == "jobs" and isinstance(request.data, dict):
                if request.action == kmock.action.CREATE:
                    meta = request.data.get("metadata") or {}
                    self.stamps.append(Stamp(now, "create", meta.get("name", ""),
                                             (meta.get("labels") or {}).get("sail.dev/run")))
                    created_job = (request.namespace or meta.get("namespace") or "", meta.get("name", ""))
                elif request.action == kmock.action.UPDATE and request.subresource == "status":
                    conditions = (request.data.get("status") or {}).get("conditions") or []
                    if any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
                        self.stamps.append(Stamp(now, "complete", request.name or ""))
            response = await super()._handle(request)
            if created_job is not None:
                self.created_jobs.put(created_job)  # after the store holds it: the Job controller may GET it
            return response

    return TimedEmulator


def build_pushed_job_controller_class() -> type:
    """The tests' instant `JobController`, told about each new Job instead of LISTing every Job 10x a second.

    At N = 500 the tests' controller re-reads all live Jobs (hundreds, ~3 KiB each) every 0.1 s
    through the emulator in this same process; here the emulator hands it the name of every
    Job POST and it GETs that Job, then plays it exactly as the tests' controller does
    (`_play`, pods and a Complete status over HTTP). A full LIST every 5 s stays as a safety net.
    """
    from tests.peers.kube import ApiFailure, JobController

    class PushedJobController(JobController):
        def _loop(self) -> None:
            emulator = self.cluster.emulator
            next_sweep = time.monotonic() + 5.0
            while not self._stop.is_set():
                try:
                    namespace, name = emulator.created_jobs.get(timeout=0.1)
                    jobs = [self.cluster.client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")]
                except queue.Empty:
                    jobs = []
                except (ApiFailure, OSError):  # gone already (a 409 POST, a deleted Job)
                    jobs = []
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + 5.0
                    try:
                        jobs += self.cluster.client.items("/apis/batch/v1/jobs")
                    except (ApiFailure, OSError):
                        pass
                for job in jobs:
                    if self._claim(job):
                        self._play_safely(job)

    return PushedJobController


def build_run(name: str, rounds: int) -> dict[str, Any]:
    """A SAILRun like the integration tests' (s3 URIs never touched: Jobs are played instantly)."""
    return {
        "apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"uri": "s3://models/tiny-sd15"}, "seedPairs": {"uri": "s3://data/seed.jsonl"},
            "prompts": {"uri": "s3://data/prompts.txt"}, "sail": {"rounds": rounds},
            "storage": {"uri": f"s3://runs/{name}", "region": "us-east-1",
                        "credentialsSecretRef": {"name": "s3-creds"}},
            "parallelism": {"generateShards": 1, "annotateShards": 1},
        },
    }


def compute_latencies(stamps: list[Stamp]) -> list[float]:
    """Completion of each Job -> creation of its run's next Job (seconds)."""
    run_of: dict[str, str] = {}
    creates: dict[str, list[float]] = {}
    for s in stamps:
        if s.kind == "create" and s.run:
            run_of[s.name] = s.run
            creates.setdefault(s.run, []).append(s.t)
    out = []
    for s in stamps:
        if s.kind != "complete" or s.name not in run_of:
            continue
        later = [t for t in creates[run_of[s.name]] if t >= s.t]
        if later:
            out.append(min(later) - s.t)
    return out


def compute_reaction_times(stamps: list[Stamp]) -> list[float]:
    """Completion of each Job -> the operator's first GET of its run afterwards (watch delivery + queueing).

    The rest of the latency (that GET -> the next Job's POST) is the reconcile itself.
    """
    run_of = {s.name: s.run for s in stamps if s.kind == "create" and s.run}
    gets: dict[str, list[float]] = {}
    for s in stamps:
        if s.kind == "get_run" and s.run:
            gets.setdefault(s.run, []).append(s.t)
    out = []
    for s in stamps:
        if s.kind == "complete" and s.name in run_of:
            later = [t for t in gets.get(run_of[s.name], []) if t >= s.t]
            if later:
                out.append(min(later) - s.t)
    return out


def compute_job_runtimes(stamps: list[Stamp]) -> list[float]:
    """Creation -> completion of each Job: the stand-in Job controller's share (not the operator's)."""
    created = {s.name: s.t for s in stamps if s.kind == "create"}
    return [s.t - created[s.name] for s in stamps if s.kind == "complete" and s.name in created]


def sum_metric(text: str, name: str) -> float:
    """Sum of every sample of `name` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"^{re.escape(name)}(\{{|\s)", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class ScaleResult:
    n: int
    rows: dict[str, Any] = field(default_factory=dict)


def run_scale(n: int, rounds: int, resync: float, timeout: float, workdir: Path,
              server_side_selectors: bool = True, emulator: str = "indexed") -> dict[str, Any]:
    """One measurement: N runs from creation to Succeeded (or the timeout).

    `emulator`: "indexed" (the default: indexed store, Job controller told of each new Job,
    run states read from the store) or "kmock" (kmock's scans and the tests' polling Job
    controller, as the bench measured before; the bench process then bounds the figure at N = 500).
    """
    from tests.peers.kube import RESOURCES, JobController, KubeCluster, OperatorProcess

    indexed = emulator == "indexed"
    cluster = KubeCluster(workdir)
    cluster.emulator = build_timed_emulator_class(server_side_selectors, indexed=indexed)()
    for key, info in RESOURCES.items():
        cluster.emulator.resources[key] = info
    cluster.start()
    controller_class = build_pushed_job_controller_class() if indexed else JobController
    controller = controller_class(cluster=cluster, mode="instant", workdir=workdir).start()
    operator = OperatorProcess(cluster=cluster, logdir=workdir,
                               extra_args=("--resync-seconds", str(resync), "--log-level", "WARNING")).start()
    self_cpu0 = read_cpu_seconds()
    load0 = os.getloadavg()
    try:
        time.sleep(2.0)  # operator start-up (kopf login, watches) is not part of the figure
        started = time.monotonic()
        names = [f"scale-{i:05d}" for i in range(n)]
        for name in names:
            cluster.create_run(build_run(name, rounds))
        created_s = time.monotonic() - started
        done, states = 0, {}
        deadline = started + timeout
        while time.monotonic() < deadline:
            if indexed:
                states = cluster.emulator.count_run_states(NS, names)
            else:
                states = {}
                for item in cluster.client.items(f"/apis/sail.dev/v1alpha1/namespaces/{NS}/sailruns"):
                    state = (item.get("status") or {}).get("state") or "None"
                    states[state] = states.get(state, 0) + 1
            done = states.get("Succeeded", 0)
            if done >= n or not operator.alive:
                break
            time.sleep(1.0)
        wall = time.monotonic() - started
        op_cpu = read_cpu_seconds(operator.process.pid) if operator.alive else None
        op_mem = read_proc_status(operator.process.pid) if operator.alive else {}
        try:
            metrics = operator.scrape()
        except OSError:
            metrics = ""
    finally:
        operator.stop()
        controller.stop()
        cluster.stop()
    latencies = compute_latencies(cluster.emulator.stamps)
    runtimes = compute_job_runtimes(cluster.emulator.stamps)
    reactions = compute_reaction_times(cluster.emulator.stamps)
    handler_sum = sum_metric(metrics, "sail_operator_handler_duration_seconds_sum")
    jobs = sum(1 for s in cluster.emulator.stamps if s.kind == "create")
    reconciles = sum_metric(metrics, "sail_operator_handler_duration_seconds_count")
    by_handler = {handler: sum_metric(metrics, f'sail_operator_handler_duration_seconds_count{{handler="{handler}"}}')
                  for handler in ("run_event", "job_event", "timer", "requeue")}
    p99 = percentile(latencies, 99)
    return {
        "n": n, "rounds": rounds, "resync_s": resync, "server_side_selectors": server_side_selectors,
        "emulator": emulator, "succeeded": done, "states": states, "wall_s": wall,
        "create_all_s": created_s, "jobs_created": jobs, "transitions": len(latencies),
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": p99,
        "latency_max_s": max(latencies) if latencies else None,
        "job_controller_p50_s": percentile(runtimes, 50), "job_controller_p99_s": percentile(runtimes, 99),
        "reaction_p50_s": percentile(reactions, 50), "reaction_p99_s": percentile(reactions, 99),
        "operator_cpu_s": op_cpu, "operator_cpu_per_run_s": op_cpu / n if op_cpu is not None else None,
        "operator_cpu_per_job_ms": 1000 * op_cpu / jobs if op_cpu is not None and jobs else None,
        "operator_peak_rss_mib": mib(op_mem.get("VmHWM")), "reconciles": reconciles,
        "reconciles_by_handler": by_handler, "reconciles_per_job": reconciles / jobs if jobs else None,
        "operator_cpu_per_reconcile_ms": 1000 * op_cpu / reconciles if op_cpu and reconciles else None,
        "reconcile_mean_wall_ms": 1000 * handler_sum / reconciles if reconciles else None,
        "bench_process_cpu_s": (read_cpu_seconds() or 0) - (self_cpu0 or 0),
        "bench_process_peak_rss_mib": mib(read_proc_status().get("VmHWM")),
        "load_avg_before": load0, "load_avg_after": os.getloadavg(),
        "target_p99_below_s": TARGET_P99_S, "target_met": p99 is not None and p99 < TARGET_P99_S,
        "controller_errors": controller.errors[:5],
    }


COLUMNS = [("n", "N"), ("succeeded", "succeeded"), ("jobs_created", "jobs"), ("wall_s", "wall s"),
           ("latency_p50_s", "p50 s"), ("latency_p99_s", "p99 s"), ("latency_max_s", "max s"),
           ("job_controller_p50_s", "Job run p50 s"), ("reaction_p50_s", "to 1st GET p50 s"),
           ("reconcile_mean_wall_ms", "reconcile ms"), ("reconciles_per_job", "reconciles/Job"),
           ("operator_cpu_per_run_s", "op CPU s/run"), ("operator_cpu_per_reconcile_ms", "op CPU ms/reconcile"),
           ("operator_peak_rss_mib", "op peak MiB"), ("target_met", "p99<2s")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 500], help="numbers of concurrent runs")
    p.add_argument("--rounds", type=int, default=1, help="SAIL rounds per run (Jobs per run: 2 + 4 x rounds)")
    p.add_argument("--resync", type=float, default=30.0, help="operator --resync-seconds (production default 30)")
    p.add_argument("--selectors", choices=["server", "client"], default="server",
                   help="server: the emulator filters LISTs by labelSelector like an API server; client: kmock as is")
    p.add_argument("--emulator", choices=["indexed", "kmock"], default="indexed",
                   help="indexed: indexed store + Job controller told of each new Job (measures the operator); "
                        "kmock: kmock's scans + the tests' polling Job controller (the bench before 2026-11-25 14:00)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every run of one N")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix=f"sail-bench-scale-{n}-") as tmp:
            result = run_scale(n, args.rounds, args.resync, args.timeout, Path(tmp), args.selectors == "server",
                               args.emulator)
        results.append(result)
        print(format_table([result], COLUMNS), flush=True)
    document = {"benchmark": "operator_scale", "argv": sys.argv[1:] if argv is None else argv,
                "machine": describe_machine("cpu"), "rows": results}
    write_json(args.out, document)
    print(format_table(results, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
