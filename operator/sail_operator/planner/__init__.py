"""The planner: a pure function from observed state to the next actions (no I/O).

One planner drives both executors (Kubernetes Jobs and local processes). See
`model.py` for the observed-state and action types, `decide.py` for the logic.
"""
