"""Reading a finished (or running) local run for people: the status table and the HTML report.

Reads only the state file, PNG and JSON files: never torch, never the trainer package.
"""
