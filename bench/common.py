"""Shared pieces of the performance benchmarks: import paths, machine facts, memory, timing, output.

Benchmarks measure; tests only check that they run (tests/*/test_bench_*.py). This module
holds no benchmark logic: it reads /proc (Linux) for memory and CPU time so that the
benchmarks need no extra package, times with `time.perf_counter` (after a device sync), and
writes one JSON document plus a plain-text table per benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def add_repo_paths() -> None:
    """Make the repo's import packages (and `tests.peers`) importable when run as `python bench/x.py`."""
    for path in (REPO / "api", REPO / "trainer", REPO / "operator", REPO):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


# Idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning threads take the
# cores the other threads wait for (docs/dev/threads.md: 16 toy samples, 2 threads, 96-182 s wall with
# the default policy, 0.9-1.8 s with PASSIVE). libgomp reads it once when torch loads.
THREAD_WAIT_POLICY = "PASSIVE"


def set_thread_policy(env: MutableMapping[str, str] | None = None) -> None:
    """Default OMP_WAIT_POLICY to PASSIVE in `env` (this process's environment when None) unless set.

    Call it before torch is first imported (a script's `__main__`); in a process that has loaded
    torch already it only changes what child processes inherit.
    """
    (os.environ if env is None else env).setdefault("OMP_WAIT_POLICY", THREAD_WAIT_POLICY)


def run_restoring_torch_threads(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run a bench's `main(argv)` and put torch's thread count back afterwards, also on failure.

    Tests call benches in-process; a bench that sets its own thread count would otherwise change
    the reduction order of every later in-process trainer run.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- machine


def read_cpu_model() -> str:
    """`model name` of /proc/cpuinfo (what `lscpu` prints as Model name), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """Where a figure was measured: CPU model and count, GPU name, library versions, UTC time."""
    info: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": read_cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


# ----------------------------------------------------------------------------- /proc


def read_proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process in bytes; {} when it is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def read_cpu_seconds(pid: int | str = "self") -> float | None:
    """user + system CPU seconds of a process (its threads included) from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux `clear_refs` value 5) so the next peak is one measurement's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def list_descendants(root_pid: int) -> list[int]:
    """Every live descendant of `root_pid` (walks /proc/*/stat parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[int(entry.name)] = ppid
    found, frontier = [], [root_pid]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == current]
        found.extend(children)
        frontier.extend(children)
    return found


def read_cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


# ----------------------------------------------------------------------------- timing


def median_seconds(fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Median, min and all wall times of `fn` over `repeats` runs after `warmup` runs (synced)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- output


def write_json(path: Path | None, document: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Plain-text table: `columns` are (key, header); floats get 4 significant digits, None is '-'."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def mib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / 2**20
