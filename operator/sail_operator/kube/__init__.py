"""Kubernetes executor: Job builder (jobs), observe, act, kopf wiring (handlers), entry point.

`jobs` and `observe` are pure; `act` is the only module that writes to the API; `handlers`
only wires kopf events to `act.reconcile_run`; `entry.main` is `sail operator`.
"""
