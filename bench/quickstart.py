"""Wall time and peak memory of the quick start (`sail run examples/quickstart.yaml`), per phase.

Runs `python -m sail_operator run FILE --storage DIR` (the `sail run` command: the local
executor starting one `sail-trainer` process per phase) with a fresh storage folder, and
meanwhile samples the process tree every `--poll` seconds from /proc: each phase process's
peak RSS (VmHWM) and CPU time, keyed by the phase and iteration of its command line. When it
is done, the per-phase wall times come from the run's state file (`<storage>/local/state.json`:
the status' iteration history and the attempt records), the trainer's own rates from the
phase summaries. Output: a table and a JSON document (--out).

The quick start's toy pipeline and seed pairs (examples/toy/model, examples/toy/seed-pairs)
are built by the toy-world tooling; when the SAILRun file points at a model folder that does
not exist, `--build-missing DIR` builds a low-budget toy pipeline and seed pairs there
(`sail-trainer toy build` / `toy pairs`: the same shapes, hence the same phase costs, but an
untrained-quality model) and runs a copy of the file that points at them.

    python bench/quickstart.py --out bench-out/quickstart.json
    python bench/quickstart.py --config my-run.yaml --storage /tmp/qs --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (  # noqa: E402
    REPO,
    add_repo_paths,
    describe_machine,
    format_table,
    list_descendants,
    mib,
    read_cmdline,
    read_cpu_seconds,
    read_proc_status,
    set_thread_policy,
    write_json,
)

add_repo_paths()
TRAINER_MODULE = "sail_trainer"


@dataclass
class ProcessSample:
    """What the poller saw of one process: its identity and the largest readings."""

    pid: int
    phase: str
    iteration: int | None
    peak_rss: int = 0
    cpu_s: float = 0.0
    first_seen: float = 0.0
    last_seen: float = 0.0


def identify_phase(argv: list[str]) -> tuple[str, int | None] | None:
    """(phase, iteration) of a `python -m sail_trainer PHASE --iteration I ...` command line."""
    if TRAINER_MODULE not in argv:
        return None
    rest = argv[argv.index(TRAINER_MODULE) + 1:]
    rest = [a for a in rest if a != "--"]
    if not rest:
        return None
    iteration = None
    if "--iteration" in rest and rest.index("--iteration") + 1 < len(rest):
        try:
            iteration = int(rest[rest.index("--iteration") + 1])
        except ValueError:
            iteration = None
    return rest[0], iteration


@dataclass
class TreePoller:
    """Samples every descendant of `root_pid` until stopped (a background thread)."""

    root_pid: int
    interval: float
    processes: dict[int, ProcessSample] = field(default_factory=dict)
    root_peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreePoller:
        self._thread = threading.Thread(target=self._loop, name="tree-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        now = time.monotonic()
        self.root_peak_rss = max(self.root_peak_rss, read_proc_status(self.root_pid).get("VmHWM", 0))
        for pid in list_descendants(self.root_pid):
            known = self.processes.get(pid)
            if known is None:
                identity = identify_phase(read_cmdline(pid))
                if identity is None:
                    continue
                known = self.processes[pid] = ProcessSample(pid, identity[0], identity[1], first_seen=now)
            status = read_proc_status(pid)
            known.peak_rss = max(known.peak_rss, status.get("VmHWM", 0))
            known.cpu_s = max(known.cpu_s, read_cpu_seconds(pid) or 0.0)
            known.last_seen = now


def read_phase_records(state_file: Path) -> list[dict[str, Any]]:
    """One row per phase run from the state file: wall time, attempts, the trainer's metrics."""
    from sail_operator.local.state import load_state

    state = load_state(state_file)
    if state is None:
        return []
    rows = []
    for record in state.status.iterations:
        for phase in record.phases:
            rows.append({"iteration": record.iteration, "phase": phase.phase, "result": str(getattr(phase.result, "value", phase.result)),
                         "attempts": phase.attempts, "wall_s": phase.duration_seconds,
                         "metrics": dict(phase.metrics)})
    attempts = {(a.iteration, a.phase.value): a for a in state.attempts.values()}
    for row in rows:
        attempt = attempts.get((row["iteration"], row["phase"]))
        if attempt is not None and attempt.duration_seconds is not None and row["wall_s"] is None:
            row["wall_s"] = attempt.duration_seconds
        if attempt is not None:
            for summary in attempt.summaries:
                row["metrics"].update({k: v for k, v in summary.metrics.items() if k.endswith("per_second")})
    return rows


def merge_process_samples(rows: list[dict[str, Any]], samples: list[ProcessSample]) -> None:
    """Add each phase's peak RSS (largest of its processes) and CPU seconds (sum) to its row."""
    for row in rows:
        mine = [s for s in samples if s.phase == row["phase"] and s.iteration == row["iteration"]]
        row["processes"] = len(mine)
        row["peak_rss_mib"] = mib(max((s.peak_rss for s in mine), default=0) or None)
        row["cpu_s"] = sum(s.cpu_s for s in mine) if mine else None


# ----------------------------------------------------------------------------- missing toy inputs


def prepare_config(config: Path, build_dir: Path | None, env: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """The SAILRun file to run: `config` itself, or a copy pointing at freshly built toy inputs."""
    import yaml

    document = yaml.safe_load(config.read_text())
    spec = document["spec"]
    base = config.resolve().parent

    def local(uri: str) -> Path:
        return Path(uri) if Path(uri).is_absolute() else base / uri

    model, pairs = local(spec["model"]["uri"]), local(spec["seedPairs"]["uri"])
    missing = [p for p in (model, pairs) if not p.exists()]
    if not missing:
        return config, {"built": False}
    if build_dir is None:
        raise SystemExit(f"{config}: {', '.join(map(str, missing))} missing; build the toy inputs "
                         "(sail-trainer toy build / toy pairs) or pass --build-missing DIR")
    build_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"built": True, "dir": str(build_dir)}
    started = time.monotonic()
    if not model.exists():
        model = build_dir / "model"
        if not (model / "model_index.json").exists():
            run_checked([sys.executable, "-m", TRAINER_MODULE, "toy", "build", "--out", str(model),
                         "--vae-steps", "40", "--unet-steps", "60", "--dataset-size", "512"], env)
    if not pairs.exists():
        pairs = build_dir / "seed-pairs" / "pairs.jsonl"
        if not pairs.exists():
            run_checked([sys.executable, "-m", TRAINER_MODULE, "toy", "pairs", "--model", str(model), "--oracle",
                         "size", "--n", "32", "--out", str(pairs.parent), "--steps", "4"], env)
    info["build_s"] = time.monotonic() - started
    spec["model"]["uri"], spec["seedPairs"]["uri"] = str(model), str(pairs)
    for key in ("prompts",):
        spec[key]["uri"] = str(local(spec[key]["uri"]))
    copy = build_dir / config.name
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy, info


def run_checked(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


# ----------------------------------------------------------------------------- driver

COLUMNS = [("iteration", "iter"), ("phase", "phase"), ("wall_s", "wall s"), ("cpu_s", "cpu s"),
           ("peak_rss_mib", "peak RSS MiB"), ("rate", "trainer rate"), ("attempts", "attempts")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "examples" / "quickstart.yaml", help="SAILRun file")
    p.add_argument("--storage", type=Path, default=None, help="run root (must not exist; default: a temp folder)")
    p.add_argument("--build-missing", type=Path, default=None,
                   help="build low-budget toy inputs here when the file's model/seed pairs are missing")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between /proc samples")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the run root afterwards")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", "1")
    set_thread_policy(env)
    config, build_info = prepare_config(args.config, args.build_missing, env)
    owned = args.storage is None
    storage = args.storage or Path(tempfile.mkdtemp(prefix="sail-bench-quickstart-")) / "run"
    if storage.exists() and any(storage.iterdir()):
        raise SystemExit(f"--storage {storage} is not empty: the quick start is measured from a fresh run root")
    command = [sys.executable, "-m", "sail_operator", "run", str(config), "--storage", str(storage)]
    storage.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log_path = Path(tempfile.mkdtemp(prefix="sail-bench-quickstart-log-")) / "sail-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603 - list args
        poller = TreePoller(process.pid, args.poll).start()
        try:
            code = process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            code = process.wait(30)
        finally:
            poller.stop()
    wall = time.monotonic() - started
    rows = read_phase_records(storage / "local" / "state.json")
    merge_process_samples(rows, list(poller.processes.values()))
    for row in rows:
        rates = {k: v for k, v in row["metrics"].items() if k.endswith("per_second")}
        row["rate"] = ", ".join(f"{v:.3g} {k.replace('_per_second', '/s')}" for k, v in rates.items()) or None
    document = {
        "benchmark": "quickstart", "argv": sys.argv[1:] if argv is None else argv, "command": command,
        "config": str(args.config), "ran": str(config), "toy_inputs": build_info, "exit_code": code,
        "machine": describe_machine("cpu"), "wall_s": wall, "sail_run_peak_rss_mib": mib(poller.root_peak_rss),
        "phases_wall_s": sum(r["wall_s"] or 0 for r in rows), "phases_cpu_s": sum(r["cpu_s"] or 0 for r in rows),
        "peak_rss_mib": max((r["peak_rss_mib"] or 0 for r in rows), default=None), "rows": rows,
        "log_tail": log_path.read_text()[-3000:],
    }
    shutil.rmtree(log_path.parent, ignore_errors=True)
    write_json(args.out, document)
    print(f"sail run {config} -> exit {code}; wall {wall:.1f} s; largest phase peak RSS "
          f"{document['peak_rss_mib'] or 0:.0f} MiB; sail run itself {document['sail_run_peak_rss_mib'] or 0:.0f} MiB")
    print(format_table(rows, COLUMNS))
    if owned and not args.keep:
        shutil.rmtree(storage.parent, ignore_errors=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
