"""Serving throughput: requests/s and latency of the rendered project's `serve` on the CPU, unbatched vs. batched.

    python benchmarks/serve_throughput.py [--requests 200] [--concurrency 8] [--batch-sizes 1 8]

The default project (multiclass images, the toy preset: resnet10t at 48 px) is fitted for one short epoch (the
weights do not change the cost of a request), then for each `--max_batch_size` a server is started as a user
starts it (`python -m <package> serve --config configs/default.yaml --config configs/toy.yaml --ckpt_path best`,
one worker on the CPU, `--torch-threads` torch threads) and a client of `--concurrency` threads, each with its
own keep-alive HTTP connection, POSTs toy test images (base64 JSON, as `curl -d` sends them) until `--requests`
are answered. Each request's latency is timed from sending it to reading the whole answer; requests/s is the
answered requests over the wall time from the first send to the last answer. A warm-up of `--warmup` requests per
server is not counted.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from common import (
    OtherCpuUse,
    Project,
    add_load_arguments,
    default_project,
    load_1min,
    machine_description,
    markdown_table,
    measured_env,
    run_checked,
    wait_for_quiet,
    write_results,
)

CONFIG = ("--config", "configs/default.yaml", "--config", "configs/toy.yaml")
STARTUP_SECONDS = 300


def fit_checkpoint(project: Project) -> None:
    """A short fit of the toy preset: a checkpoint for `--ckpt_path best`."""
    short = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2")
    run_checked(project.command("fit", *CONFIG, *short, "--trainer.logger", "false"), project.root)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    project: Project, port: int, max_batch_size: int, batch_timeout: float, threads: int, log: Path
) -> subprocess.Popen:
    """`serve` of the newest best checkpoint, answering /health; its own process group (the workers go with it).
    `threads`: the worker's torch threads (OMP_NUM_THREADS)."""
    args = ["--ckpt_path", "best", "--port", str(port), "--max_batch_size", str(max_batch_size)]
    args += ["--batch_timeout", str(batch_timeout), "--accelerator", "cpu", "--trainer.logger", "false"]
    with log.open("w") as out:
        process = subprocess.Popen(
            project.command("serve", *CONFIG, *args),
            cwd=project.root,
            env={**measured_env(), "OMP_NUM_THREADS": str(threads)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.read() == b"ok":
                    return process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"serve did not answer /health in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)  # LitServe's graceful shutdown
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def load_client(port: int, bodies: list[bytes], total: int, concurrency: int) -> tuple[list[float], float, int]:
    """(latency of each answered request in seconds, wall seconds, errors): `concurrency` threads, each on its
    own keep-alive connection, POST the bodies in turn until `total` requests are sent."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            start = time.perf_counter()
            connection.request("POST", "/predict", bodies[i % len(bodies)], {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            elapsed = time.perf_counter() - start
            with lock:
                if response.status == 200 and b"prediction" in answer:
                    latencies.append(elapsed)
                else:
                    errors += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start, errors


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="measured requests per server (default 200)")
    parser.add_argument("--warmup", type=int, default=16, help="requests per server before measuring (default 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads sending at once (default 8)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="--max_batch_size values")
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="--batch_timeout of batched servers")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="the server worker's torch threads, OMP_NUM_THREADS (default 1)"
    )
    add_load_arguments(parser)
    args = parser.parse_args()

    results = []
    with default_project() as project:
        print("fitting a checkpoint ...", flush=True)
        fit_checkpoint(project)
        images = sorted((project.root / "data" / "toy" / "test").rglob("*.png"))[:64]
        bodies = [json.dumps({"image": base64.b64encode(path.read_bytes()).decode()}).encode() for path in images]
        conditions = [wait_for_quiet(args.max_load, args.wait)]
        with OtherCpuUse() as other:
            for size in args.batch_sizes:
                timeout = args.batch_timeout if size > 1 else 0.0
                port = free_port()
                print(f"max_batch_size {size}: starting the server ...", flush=True)
                log = project.root / f"serve-{size}.log"
                process = start_server(project, port, size, timeout, args.torch_threads, log)
                try:
                    load_client(port, bodies, args.warmup, args.concurrency)
                    latencies, wall, errors = load_client(port, bodies, args.requests, args.concurrency)
                finally:
                    stop_server(process)
                row = {
                    "max_batch_size": size,
                    "batch_timeout": timeout,
                    "requests_per_s": len(latencies) / wall,
                    "p50_ms": 1000 * percentile(latencies, 50),
                    "p95_ms": 1000 * percentile(latencies, 95),
                    "errors": errors,
                }
                print(json.dumps(row), flush=True)
                results.append(row)
        conditions += [other.line(), f"1-min load average when measuring ended: {load_1min():.2f}"]
        machine = machine_description(project.python)

    rows = [
        [
            r["max_batch_size"],
            f"{r['batch_timeout']:g}",
            args.concurrency,
            f"{r['requests_per_s']:.1f}",
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            r["errors"],
        ]
        for r in results
    ]
    headers = ["--max_batch_size", "--batch_timeout (s)", "client threads", "requests/s", "p50 (ms)", "p95 (ms)"]
    table = markdown_table([*headers, "errors"], rows)
    print("\n" + table)
    method = [
        "The rendered default project (multiclass images from class folders; toy preset: resnet10t, 48 px), "
        "fitted for one epoch of 2 batches: the weights do not change what a request costs.",
        "Per row a fresh server: `python -m <package> serve --config configs/default.yaml --config "
        "configs/toy.yaml --ckpt_path best --accelerator cpu` with the row's `--max_batch_size` / "
        f"`--batch_timeout`, one worker process with {args.torch_threads} torch thread(s) (OMP_NUM_THREADS: on a "
        "few shared cores, more threads than free cores make OpenMP spin-wait, ten times slower per batch on the "
        "2-core machine below), started and stopped (SIGTERM) by the script.",
        f"Client: {args.concurrency} threads in this process, each with its own keep-alive HTTP connection, POST "
        f"toy test images (PNG, base64 JSON) in turn; {args.warmup} warm-up requests, then {args.requests} "
        "measured. Latency: send to the whole answer read; requests/s: answered requests over the wall time of the "
        "measured requests. p50 / p95: percentiles of the latencies.",
        "Client and server share the machine's cores: the client's threads take CPU time from the server.",
    ]
    write_results("serve_throughput", "Serving throughput on the CPU", table, method, conditions, machine)


if __name__ == "__main__":
    main()
