"""CPU threads, idle and busy: a tiny CPU trial at 1 thread vs torch's default (one per core), and Epoch's Approach 3
with 200 bootstraps at 1 BLAS thread vs OpenBLAS's default, each on idle cores and beside a busy process.

"Busy" is one CPU-bound process per core (a pure-Python loop each: what a second trial, a browser or the test
suite does to a laptop). Every measurement runs in a fresh process, so OpenMP and OpenBLAS start as a user's
command would; the numbers are wall-clock seconds, the median of --repeats runs.

    python benchmarks/threads.py --out benchmarks/results/threads_cpu.json      # about 10 minutes on 2 cores
    python benchmarks/threads.py --table benchmarks/results/threads_cpu.json     # the Markdown table again
"""
import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a tiny CPU trial (the suite's and the CPU demo's scale) and a larger one, where more threads could pay
TRIALS = {
    "tiny64": ["model=tiny64", "train.seq_len=128", "train.batch_size_tokens=2048", "train.micro_batch_size=16",
               f"train.total_tokens={2048 * 128}", "train.eval_points=4", "train.eval_tokens=4096"],
    "tiny256": ["model=tiny256", "train.seq_len=128", "train.batch_size_tokens=4096", "train.micro_batch_size=32",
                f"train.total_tokens={4096 * 40}", "train.eval_points=4", "train.eval_tokens=4096"],
}

TRIAL_CODE = """
import sys, time, tempfile
import torch
from windtunnel import compose, run_trial
from windtunnel.train.core import cpu_threads
cfg = compose(sys.argv[1:])
threads = cpu_threads(cfg, torch.device("cpu")) or torch.get_num_threads()  # what the trainer sets
with tempfile.TemporaryDirectory() as out:
    start = time.time()
    result = run_trial(cfg, out)
    seconds = time.time() - start
assert result.status == "completed", result.error
print(seconds, threads)
"""

FIT_CODE = """
import time
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info
from windtunnel.fit import loss_law
from windtunnel.fit.blas import blas_threads
rng = np.random.default_rng(0)
N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 240))
D = np.exp(rng.uniform(np.log(5e9), np.log(5e11), 240))
L = (1.817 + 482.0 / N ** 0.3478 + 2085.4 / D ** 0.3659) * np.exp(rng.normal(0, 0.01, 240))  # Epoch's estimates
start = time.time()
fit = loss_law(pd.DataFrame({"N": N, "D": D, "loss": L}), n_boot=200)
default = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
print(time.time() - start, blas_threads() or default)
"""


def burners(n: int) -> list:
    """n pure-Python busy loops, one process each (killed by the caller)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def timed(code: str, args: list, env: dict) -> tuple[float, str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    first, second = done.stdout.split()[-2:]
    return float(first), second


def measure(repeats: int, cores: int) -> list[dict]:
    rows = []
    cases = [("trial", name, setting) for name in TRIALS for setting in ("auto", "1", str(cores))]
    cases += [("fit", "approach3_240pts_200boot", setting) for setting in ("auto", "1", "default")]
    for load in ("idle", "busy"):
        for kind, name, setting in cases:
            seconds, detail = [], ""
            for _ in range(repeats):
                procs = burners(cores) if load == "busy" else []
                try:
                    time.sleep(0.5 if procs else 0)
                    if kind == "trial":
                        threads = "0" if setting == "auto" else setting
                        s, detail = timed(TRIAL_CODE, TRIALS[name] + ["train=cpu", f"train.threads={threads}"], {})
                    else:  # auto: windtunnel's own limit (one thread); default: OpenBLAS as it starts
                        env = {"WINDTUNNEL_BLAS_THREADS": {"auto": "", "1": "1", "default": "0"}[setting]}
                        s, detail = timed(FIT_CODE, [], env)
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
                seconds.append(s)
            rows.append({"what": kind, "case": name, "threads": setting, "load": load,
                         "seconds": statistics.median(seconds), "all_seconds": seconds, "detail": detail})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(doc: dict) -> str:
    rows = doc["rows"]
    out = [f"CPU: {doc['machine']['cpu']} ({doc['machine']['cores']} cores), torch {doc['machine']['torch']}, "
           f"median of {doc['repeats']} runs, wall seconds", "",
           "| what | threads (used) | idle | busy (one busy process per core) |", "|---|---|---|---|"]
    keys = []
    for r in rows:
        if (r["what"], r["case"], r["threads"]) not in keys:
            keys.append((r["what"], r["case"], r["threads"]))
    for what, case, threads in keys:
        cell = {r["load"]: r["seconds"] for r in rows if (r["what"], r["case"], r["threads"]) == (what, case, threads)}
        used = next(r["detail"] for r in rows if (r["what"], r["case"], r["threads"]) == (what, case, threads))
        label = f"{case} ({'torch intra-op' if what == 'trial' else 'BLAS'})"
        shown = f"{threads} ({used})" if threads in ("auto", "default") else threads
        out.append(f"| {label} | {shown} | {cell.get('idle', float('nan')):.1f} | {cell.get('busy', float('nan')):.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="results JSON (a .md table is written beside it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table", help="print the Markdown table of a results file")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    import torch
    cores = multiprocessing.cpu_count()
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": cores, "torch": torch.__version__,
                       "python": platform.python_version()}, "repeats": args.repeats,
           "rows": measure(args.repeats, cores)}
    text = table(doc)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
