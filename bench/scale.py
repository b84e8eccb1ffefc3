"""The real phases at growing counts with a tiny UNet: does every phase stream and grow linearly?

The compute is made cheap (the tests' tiny SD1.5-layout pipeline: 16 px images, 8x8 latents,
1 sampler step without guidance, 1 reward draw, 2 train steps) so that the data path dominates:
reading prompts, writing and indexing latent parts, manifests, the mixture index, the training
set's references. Per (backend, shards, size) the real `sail-trainer` phases run one after
another in one child process (this file's `--child` mode: it imports torch and the trainer
first, then calls `sail_trainer.cli.main` per phase and shard, so interpreter start-up and
imports are not counted):

    step 0: mixup (VAE-encode the seed pairs) and train, then round 1: generate, annotate, mixup, train

Measured per phase (all shards together, run one after another): wall time and CPU time of the
phase code (CPU time is the figure to compare on a shared machine), peak RSS during the phase
(VmHWM reset just before it; `phase_rss_mib` is the peak minus the RSS the phase started with),
S3 requests by verb and the bytes sent and received (a counting WSGI layer around moto's server,
in this process, attributed to a phase by its start and end time), objects and bytes stored under
the phase's folder, and the commit manifests' total size. The growth exponent of each metric is
log(m_large / m_small) / log(size_large / size_small) between the
smallest and the largest size (1.0 = linear). Counts: `--sizes` prompts per round x
`--candidates` (8); `--seed-sizes` seed pairs for the step-0 series (the round series use `--round-seed-pairs`).

    .venv/bin/python bench/scale.py --sizes 250 1000 --backends local s3 --shards 1 --out bench-out/scale.json
    .venv/bin/python bench/scale.py --seed-sizes 1000 5000 --backends local --out bench-out/scale-seed.json

Train runs `--train-steps` optimizer steps whatever the size (its compute grows with the steps
the spec asks for, by design); what is measured at scale is its data path: loading the mixture
index and the references of every pair. Results and the machine: docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_repo_paths, describe_machine, format_table, write_json  # noqa: E402

add_repo_paths()
ROUND_PHASES = [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1), ("mixup", 1), ("train", 1)]
SHARDED = ("generate", "annotate")
DISTINCT_IMAGES = 64  # synthetic seed images, reused across pairs (decoding cost per pair is the same)
REGION = "us-east-1"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


# ----------------------------------------------------------------------------- S3 peer with counters


class CountingApp:
    """WSGI layer around moto: every request's time, verb (LIST for a bucket-level GET), bytes in and out.

    Phases run one after another in a child process; their requests are told apart by the
    phase's start and end times (`count_between`)."""

    def __init__(self, app: Any, latency_s: float = 0.0) -> None:
        self.app = app
        self.latency_s = latency_s  # a simulated network round trip per request (moto answers in-process)
        self.lock = threading.Lock()
        self.log: list[list[Any]] = []  # [time, verb, bytes in, bytes out]

    @staticmethod
    def verb(environ: dict[str, Any]) -> str:
        method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        if method == "GET" and (path.strip("/").count("/") == 0 or "list-type" in query):
            return "LIST"
        if method == "POST" and "delete" in query:
            return "DELETE_BATCH"
        if method == "POST" and ("uploads" in query or "uploadId" in query):
            return "MULTIPART"
        return method

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        entry = [time.time(), self.verb(environ), int(environ.get("CONTENT_LENGTH") or 0), 0]
        with self.lock:
            self.log.append(entry)
        if self.latency_s:
            time.sleep(self.latency_s)
        for chunk in self.app(environ, start_response):
            entry[3] += len(chunk)
            yield chunk

    def count_between(self, start: float, end: float) -> dict[str, Any]:
        with self.lock:
            chosen = [e for e in self.log if start <= e[0] <= end]
        return {"requests": dict(Counter(e[1] for e in chosen)), "bytes_in": sum(e[2] for e in chosen),
                "bytes_out": sum(e[3] for e in chosen)}


def start_s3(latency_s: float = 0.0) -> tuple[str, CountingApp, Any]:
    """moto's S3 on 127.0.0.1 (a free port) behind `CountingApp`; returns (endpoint, counters, server)."""
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    counting = CountingApp(DomainDispatcherApplication(create_backend_app), latency_s)
    server = make_server("127.0.0.1", 0, counting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", counting, server


# ----------------------------------------------------------------------------- inputs


def build_model(folder: Path) -> Path:
    from tests.builders.tiny_pipeline import build_tiny_sd15

    if not (folder / "model_index.json").exists():
        build_tiny_sd15(folder)
    return folder


def build_prompts(path: Path, n: int) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"a photo of thing {i} on a red hill\n" for i in range(n)))
    return path


def build_seed_pairs(folder: Path, n: int) -> Path:
    """`pairs.jsonl` with n pairs over DISTINCT_IMAGES synthetic PNGs (one file, any n)."""
    from tests.builders.tiny_pipeline import build_tiny_seed_pairs

    path = folder / f"pairs-{n}.jsonl"
    if path.exists():
        return path
    build_tiny_seed_pairs(folder, DISTINCT_IMAGES // 2)
    rows = []
    for i in range(n):
        a, b = (2 * i) % DISTINCT_IMAGES, (2 * i + 1) % DISTINCT_IMAGES
        rows.append(json.dumps({"prompt": f"a seed photo number {i}", "winner": f"images/{a // 2:04d}-w.png",
                                "loser": f"images/{b // 2:04d}-l.png"}))
    path.write_text("\n".join(rows) + "\n")
    return path


def build_spec(path: Path, run_uri: str, model: Path, seed: Path, prompts: Path, size: int, args: argparse.Namespace,
               endpoint: str | None) -> Path:
    from tests.builders.tiny_pipeline import build_tiny_run_spec

    path.write_text(build_tiny_run_spec(
        run_uri, str(model), str(seed), str(prompts), name="scale", endpoint=endpoint, region=REGION if endpoint else None,
        promptsPerRound=size, candidatesPerPrompt=args.candidates, rewardDraws=1, alpha=0.25,
        sampler={"steps": 1, "guidanceScale": 1.0, "batchSize": args.batch},
        train={"effectiveBatch": 8, "microBatch": 8, "steps": args.train_steps, "step0Steps": args.train_steps,
               "checkpointEvery": 1000},
    ))
    return path


# ----------------------------------------------------------------------------- one phase in a child


def child_main(argv: list[str]) -> int:
    """`--child PLAN.json OUT.json`: run the plan's phases (each a list of `sail-trainer` argument lists,
    one per shard) in this one process, after the imports; per phase: start/end time, the phase
    code's seconds, RSS before it and its peak RSS (VmHWM reset just before it)."""
    plan, out = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    import diffusers  # noqa: F401  (import cost is start-up, not the phase)
    import torch  # noqa: F401

    import sail_trainer.phases.annotate_phase  # noqa: F401
    import sail_trainer.phases.generate_phase  # noqa: F401
    import sail_trainer.phases.mixup_phase  # noqa: F401
    import sail_trainer.phases.train_phase  # noqa: F401
    from bench.common import read_cpu_seconds, read_proc_status, reset_peak_rss
    from sail_trainer.cli import main

    results = []
    for name, shard_args in plan:
        record = {"phase": name, "start": time.time(), "seconds": 0.0, "cpu_seconds": 0.0, "rss_before": 0,
                  "peak_rss": 0}
        for trainer_args in shard_args:
            gc.collect()
            record["rss_before"] = max(record["rss_before"], read_proc_status().get("VmRSS", 0))
            record["peak_reset"] = reset_peak_rss()
            started, cpu = time.perf_counter(), read_cpu_seconds() or 0.0
            code = main(trainer_args)
            record["seconds"] += time.perf_counter() - started
            record["cpu_seconds"] += (read_cpu_seconds() or 0.0) - cpu
            record["peak_rss"] = max(record["peak_rss"], read_proc_status().get("VmHWM", 0))
            if code:
                out.write_text(json.dumps({"failed": trainer_args, "code": code, "results": results}))
                return int(code)
        record["end"] = time.time()
        results.append(record)
    out.write_text(json.dumps({"results": results}))
    return 0


def run_child(plan: list[Any], env: dict[str, str], work: Path) -> list[dict[str, Any]]:
    plan_file, out = work / "plan.json", work / "child.json"
    plan_file.write_text(json.dumps(plan))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(plan_file), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(out.read_text())["results"]


# ----------------------------------------------------------------------------- storage facts


def list_objects(run_uri: str, prefix: str, endpoint: str | None) -> list[tuple[str, int]]:
    """(key, size) of every object under `<run>/<prefix>`, from the bench (not counted: listed after the diff)."""
    if run_uri.startswith("s3://"):
        import boto3

        bucket, _, root = run_uri[5:].partition("/")
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{root}/{prefix}/"):
            keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        return keys
    base = Path(run_uri) / prefix
    return [(str(p), p.stat().st_size) for p in base.rglob("*") if p.is_file()] if base.exists() else []


# ----------------------------------------------------------------------------- one configuration


def run_config(backend: str, shards: int, size: int, seed_pairs: int, args: argparse.Namespace, inputs: dict[str, Path],
               s3: tuple[str, CountingApp] | None, phases: list[tuple[str, int]]) -> list[dict[str, Any]]:
    work = args.work / f"{backend}-s{shards}-p{size}-seed{seed_pairs}-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    endpoint = s3[0] if s3 else None
    if backend == "s3":
        import boto3

        bucket = f"scale-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)
        run_uri = f"s3://{bucket}/run"
    else:
        run_uri = str(work / "run")
    seed = build_seed_pairs(inputs["seed_dir"], seed_pairs)
    prompts = build_prompts(args.work / f"prompts-{size}.txt", size)
    spec = build_spec(work / "spec.json", run_uri, inputs["model"], seed, prompts, size, args, endpoint)
    env = {**os.environ, **AWS_ENV, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    plan = []
    for phase, iteration in phases:
        shard_args = [["--shard", f"{k}/{shards}"] for k in range(shards)] if phase in SHARDED else [[]]
        plan.append([f"{phase}{'' if iteration else '0'}",
                     [[phase, "--run", run_uri, "--iteration", str(iteration), "--spec", str(spec), *extra]
                      for extra in shard_args]])
    results = run_child(plan, env, work)
    rows = []
    for (phase, iteration), child in zip(phases, results, strict=True):
        counts = s3[1].count_between(child["start"], child["end"]) if s3 else None
        objects = list_objects(run_uri, f"iter-{iteration:03d}/{phase}", endpoint)
        manifests = [n for k, n in objects if k.endswith("_SUCCESS.json")]
        rows.append({
            "backend": backend, "shards": shards, "prompts": size, "seed_pairs": seed_pairs,
            "phase": child["phase"], "seconds": child["seconds"], "cpu_seconds": child["cpu_seconds"],
            "peak_rss_mib": child["peak_rss"] / 2**20,
            "rss_before_mib": child["rss_before"] / 2**20,
            "phase_rss_mib": max(0, child["peak_rss"] - child["rss_before"]) / 2**20,
            "objects": len(objects), "stored_mib": sum(n for _, n in objects) / 2**20,
            "manifests": len(manifests), "manifest_kib": sum(manifests) / 1024,
            "max_manifest_kib": max(manifests, default=0) / 1024,
            "s3_requests": counts["requests"] if counts else None,
            "s3_total_requests": sum(counts["requests"].values()) if counts else None,
            "s3_mib_in": counts["bytes_in"] / 2**20 if counts else None,
            "s3_mib_out": counts["bytes_out"] / 2**20 if counts else None,
        })
        print(f"  {backend} shards={shards} prompts={size} seed={seed_pairs} {rows[-1]['phase']:<9} "
              f"{rows[-1]['seconds']:7.2f} s ({rows[-1]['cpu_seconds']:.2f} CPU s)  peak {rows[-1]['peak_rss_mib']:6.0f} MiB  {rows[-1]['objects']} objects"
              + (f"  S3 {counts['requests']}" if counts else ""), flush=True)
    return rows


# ----------------------------------------------------------------------------- commits of many files


def measure_commit(backend: str, files: int, args: argparse.Namespace, s3: tuple[str, CountingApp] | None) -> dict:
    """Write `files` 1 KiB files into one folder and commit it: the commit's time, requests, manifest size,
    and a read of the manifest back (what every reader of a phase does first)."""
    from sail_api.storage import LocalStore, S3Connection, S3Store

    if backend == "s3":
        import boto3

        bucket = f"commit-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3[0], region_name=REGION).create_bucket(Bucket=bucket)
        store = S3Store(f"s3://{bucket}/run", S3Connection(endpoint=s3[0], region=REGION))
    else:
        store = LocalStore(str(args.work / f"commit-{uuid.uuid4().hex[:6]}"))
    names = [f"parts/part-{i:06d}/data.bin" for i in range(files)]
    for i, name in enumerate(names):
        store.write_bytes(f"phase/{name}", i.to_bytes(4, "big") * 256)
    start_time, started, cpu = time.time(), time.perf_counter(), read_cpu()
    store.commit("phase", names, metrics={"files": float(files)})
    commit_s, commit_cpu = time.perf_counter() - started, read_cpu() - cpu
    end_time = time.time()
    started = time.perf_counter()
    manifest = store.read_manifest("phase")
    read_s = time.perf_counter() - started
    counts = s3[1].count_between(start_time, end_time) if backend == "s3" else None
    from sail_api.storage import manifests

    row = {"backend": backend, "files": files, "commit_workers": manifests.COMMIT_WORKERS,
           "s3_latency_ms": args.s3_latency_ms if backend == "s3" else None, "commit_s": commit_s, "commit_cpu_s": commit_cpu, "read_manifest_s": read_s,
           "manifest_kib": len(manifest.model_dump_json(by_alias=True, indent=2)) / 1024,
           "commit_requests": counts["requests"] if counts else None}
    print(f"  commit {backend} {files} files: {commit_s:.2f} s ({commit_cpu:.2f} CPU s), manifest "
          f"{row['manifest_kib']:.0f} KiB, read back {read_s:.2f} s" + (f", S3 {counts['requests']}" if counts else ""),
          flush=True)
    return row


def read_cpu() -> float:
    from bench.common import read_cpu_seconds

    return read_cpu_seconds() or 0.0


# ----------------------------------------------------------------------------- growth


GROWTH_METRICS = ("seconds", "cpu_seconds", "peak_rss_mib", "phase_rss_mib", "s3_total_requests", "s3_mib_in", "s3_mib_out", "objects", "stored_mib",
                  "manifest_kib")


def compute_growth(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per (backend, shards, phase): exponent of each metric from the smallest to the largest `key` value
    and the plain ratio; None where a metric is missing or zero."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["backend"], row["shards"], row["phase"]), []).append(row)
    out = []
    for (backend, shards, phase), members in groups.items():
        members.sort(key=lambda r: r[key])
        small, large = members[0], members[-1]
        if small[key] == large[key]:
            continue
        entry = {"backend": backend, "shards": shards, "phase": phase, "from": small[key], "to": large[key]}
        for metric in GROWTH_METRICS:
            a, b = small.get(metric), large.get(metric)
            ok = a is not None and b is not None and a > 0 and b > 0
            entry[f"{metric}_exp"] = math.log(b / a) / math.log(large[key] / small[key]) if ok else None
            entry[f"{metric}_ratio"] = b / a if ok else None
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[250, 1000], help="prompts per round (round series)")
    parser.add_argument("--seed-sizes", type=int, nargs="*", default=[], help="seed pairs (step-0 series)")
    parser.add_argument("--round-seed-pairs", type=int, default=256, help="seed pairs of the round series")
    parser.add_argument("--candidates", type=int, default=8, help="N candidates per prompt")
    parser.add_argument("--batch", type=int, default=256, help="sampler batch (images per generate forward)")
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps of each train")
    parser.add_argument("--backends", nargs="+", default=["local"], choices=["local", "s3"])
    parser.add_argument("--shards", type=int, nargs="+", default=[1], help="generate/annotate shard counts")
    parser.add_argument("--commit-files", type=int, nargs="*", default=[],
                        help="also time one commit of this many files per backend (manifest scaling)")
    parser.add_argument("--s3-latency-ms", type=float, default=0.0,
                        help="simulated round trip added to every S3 request (default 0: moto on loopback)")
    parser.add_argument("--commit-workers", type=int, default=None,
                        help="concurrent HEADs/hashes while building a manifest (default: the store's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sail-bench-scale"), help="scratch folder")
    parser.add_argument("--out", type=Path, help="JSON results")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--child":
        return child_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.commit_workers is not None:
        from sail_api.storage import manifests

        manifests.COMMIT_WORKERS = args.commit_workers
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = {"model": build_model(args.work / "model"), "seed_dir": args.work / "seed"}
    s3 = None
    server = None
    if "s3" in args.backends:
        endpoint, counting, server = start_s3(args.s3_latency_ms / 1000)
        s3 = (endpoint, counting)
    os.environ.update(AWS_ENV)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seed_rows: list[dict[str, Any]] = []
    commit_rows: list[dict[str, Any]] = []
    try:
        for backend in args.backends:
            for shards in args.shards:
                for size in args.sizes:
                    rows += run_config(backend, shards, size, args.round_seed_pairs, args, inputs,
                                       s3 if backend == "s3" else None, ROUND_PHASES)
            for seed_pairs in args.seed_sizes:
                seed_rows += run_config(backend, 1, 8, seed_pairs, args, inputs, s3 if backend == "s3" else None,
                                        [("mixup", 0)])
            for files in args.commit_files:
                commit_rows.append(measure_commit(backend, files, args, s3))
    finally:
        if server is not None:
            server.shutdown()
    document = {
        "machine": describe_machine(), "argv": argv, "total_seconds": time.perf_counter() - started,
        "rows": rows, "seed_rows": seed_rows, "commit_rows": commit_rows,
        "growth": compute_growth(rows, "prompts"), "seed_growth": compute_growth(seed_rows, "seed_pairs"),
    }
    write_json(args.out, document)
    columns = [("backend", "backend"), ("shards", "S"), ("prompts", "prompts"), ("seed_pairs", "seed"),
               ("phase", "phase"), ("seconds", "s"), ("cpu_seconds", "CPU s"), ("peak_rss_mib", "peak MiB"), ("objects", "objects"),
               ("stored_mib", "stored MiB"), ("manifest_kib", "manifest KiB"), ("s3_total_requests", "S3 req"),
               ("s3_mib_in", "S3 MiB in"), ("s3_mib_out", "S3 MiB out")]
    print(format_table(rows + seed_rows, columns))
    growth_cols = [("backend", "backend"), ("shards", "S"), ("phase", "phase"), ("from", "from"), ("to", "to"),
                   ("seconds_exp", "time exp"), ("cpu_seconds_exp", "CPU exp"), ("peak_rss_mib_ratio", "RSS ratio"), ("phase_rss_mib_ratio", "phase RSS ratio"), ("s3_total_requests_exp", "S3 req exp"),
                   ("objects_exp", "objects exp"), ("manifest_kib_exp", "manifest exp")]
    print(format_table(document["growth"] + document["seed_growth"], growth_cols))
    print(f"total {document['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
