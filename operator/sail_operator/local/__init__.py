"""The local executor behind `sail run`: the planner driving `sail-trainer` subprocesses.

`paths` resolves where a run lives, `state` is the state file (status + attempt outcomes),
`progress` parses the trainer's progress lines and shows bars, `supervisor` starts, reaps and
stops the phase processes, `observe` (pure) turns the state and the live attempts into planner
facts, `executor` is the observe -> decide -> act loop. Never imports torch: phases are
separate processes. See docs/dev/executor-seam.md for what it shares with the kube executor.
"""
