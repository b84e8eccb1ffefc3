"""The local executor behind `sail run`: the planner driving `sail-trainer` subprocesses.

`paths` resolves where a run lives, `state` is the state file (status + attempt outcomes),
`progress` parses the trainer's progress lines and shows bars, `executor` is the
observe -> decide -> act loop. Never imports torch: phases are separate processes.
"""
