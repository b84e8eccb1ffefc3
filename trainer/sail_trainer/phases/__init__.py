"""The four phases, each `run(ctx: PhaseContext) -> PhaseManifest`, plus the shared driver.

`runner.execute_phase` does what every phase needs (spec and digest check, run.json,
already-committed short cut, leftovers of a crashed attempt) and then calls the phase's
`run`, which writes its files and commits `_SUCCESS.json` last. Heavy imports happen
inside `run`, so importing this package stays cheap.
"""
