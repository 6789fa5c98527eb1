#!/usr/bin/env python3
"""Back-to-back comparison of proxies at saturation: req/s and CPU µs per request.

Every arm is a command that starts a server and prints its base URL (`http://ADDR`, on stdout
or stderr, anywhere in a line). The arms are started once, then driven in turn with the same
oha command (POST of a 112-byte OIP v2 body, 32 keep-alive connections, no rate limit) for
`--duration` seconds each, `--pairs` times, the order alternating between rounds so that
neither arm always runs first. For each run it reads the server's CPU time (utime + stime from
/proc, all threads, and its child processes: nginx's workers) and divides it by the answered
requests; the system share (the kernel's socket work) is printed beside it. Prints one line per run and the
medians, and with `--json FILE` writes them.

A shared 2-vCPU machine moves the same arm by ±25% from one run to the next: only differences
that hold in most pairs mean anything. Use `bench/callgrind.sh` for instruction counts.

    python3 bench/pairs.py --arm "multi=target/release/mock-backend --threads 2 --proxy-to URL" \\
        --arm "per-core=target/release/mock-backend --threads 2 --per-core --proxy-to URL" \\
        --backend target/release/mock-backend --pairs 5

In an arm's command the word `URL` is replaced by the backend's base URL, `DIR` by a fresh
temp directory of the arm's own.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BODY = '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1.01,49.5,2.02,55.0,3.0,-4.0,1.1,1003.0]}]}'
URL_RE = re.compile(r"(https?://[0-9.:\[\]a-z]+)")
TICKS = os.sysconf("SC_CLK_TCK")


def start(cmd, env=None):
    """Starts `cmd`, returns (process, base URL) once it printed one."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    found = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            if not found:
                m = URL_RE.search(line)
                if m:
                    found.append(m.group(1))
                    ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120) or not found:
        proc.kill()
        sys.exit(f"pairs: {cmd[0]} printed no URL")
    return proc, found[0]


def user_sys_seconds(pid):
    """(user, system) CPU seconds of `pid` and every process descended from it (nginx's
    workers are its master's children)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields[1] is the parent; fields[11], [12] are utime, stime (the 4th, 14th and 15th
        # of the whole line)
        stats[int(entry)] = (int(fields[1]), int(fields[11]), int(fields[12]))
    tree, grew = {pid}, True
    while grew:
        grew = False
        for p, (parent, _, _) in stats.items():
            if parent in tree and p not in tree:
                tree.add(p)
                grew = True
    user = sum(stats[p][1] for p in tree if p in stats)
    system = sum(stats[p][2] for p in tree if p in stats)
    return user / TICKS, system / TICKS


def cpu_seconds(pid):
    return sum(user_sys_seconds(pid))


def thread_cpu_seconds(pid, prefix):
    """CPU time of the threads of `pid` whose name (comm, 15 bytes at most) starts with `prefix`."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().strip().startswith(prefix[:15]):
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
        except FileNotFoundError:
            continue
    return total


def drive(oha, url, path, seconds, conns):
    out = subprocess.run(
        [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
         "-m", "POST", "-H", "content-type: application/json", "-d", BODY, url + path],
        capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    ok = sum(v for k, v in j.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    total = sum(j.get("statusCodeDistribution", {}).values())
    return ok, total, j["summary"]["requestsPerSec"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", action="append", required=True, help="NAME=COMMAND")
    ap.add_argument("--backend", help="mock-backend binary: started once with 2 threads, its URL fills `URL`")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--path", default="/v2/models/m/infer")
    ap.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    ap.add_argument("--json", help="write the runs and medians here")
    ap.add_argument("--thread", help="also report the CPU µs/req of the threads whose name starts with this (e.g. switchyard-log)")
    args = ap.parse_args()

    procs = []
    tmp = tempfile.mkdtemp(prefix="pairs-")
    try:
        backend_url = None
        if args.backend:
            p, backend_url = start([args.backend, "--threads", "2"])
            procs.append(p)
        arms = []
        for spec in args.arm:
            name, _, cmd = spec.partition("=")
            d = os.path.join(tmp, name)
            os.makedirs(d)
            words = [w.replace("URL", backend_url or "URL").replace("DIR", d) for w in shlex.split(cmd)]
            env = dict(os.environ, TOKIO_WORKER_THREADS=os.environ.get("TOKIO_WORKER_THREADS", "2"), RUST_LOG="warn")
            p, url = start(words, env)
            procs.append(p)
            arms.append((name, p, url))
        for _, _, url in arms:  # warm up: connections, pools, page cache
            drive(args.oha, url, args.path, 1, args.conns)
        runs = {name: [] for name, _, _ in arms}
        for r in range(args.pairs):
            order = arms if r % 2 == 0 else list(reversed(arms))
            for name, p, url in order:
                before = user_sys_seconds(p.pid)
                thread_before = thread_cpu_seconds(p.pid, args.thread) if args.thread else 0.0
                ok, total, rps = drive(args.oha, url, args.path, args.duration, args.conns)
                after = user_sys_seconds(p.pid)
                user, system = after[0] - before[0], after[1] - before[1]
                us = (user + system) / ok * 1e6 if ok else float("nan")
                sys_us = system / ok * 1e6 if ok else float("nan")
                run = {"rps": rps, "cpu_us_per_req": us, "sys_us_per_req": sys_us, "ok": ok, "total": total}
                extra = ""
                if args.thread:
                    t_us = (thread_cpu_seconds(p.pid, args.thread) - thread_before) / ok * 1e6 if ok else float("nan")
                    run["thread_cpu_us_per_req"] = t_us
                    extra = f"  {t_us:5.2f} µs/req in {args.thread}*"
                runs[name].append(run)
                print(f"round {r + 1} {name:>12}: {rps:9.0f} req/s  {us:6.1f} µs CPU/req ({sys_us:5.1f} system){extra}  ({ok}/{total} 2xx)", flush=True)
        medians = {}
        for name in runs:
            rps = statistics.median(x["rps"] for x in runs[name])
            us = statistics.median(x["cpu_us_per_req"] for x in runs[name])
            sys_us = statistics.median(x["sys_us_per_req"] for x in runs[name])
            medians[name] = {"rps": rps, "cpu_us_per_req": us, "sys_us_per_req": sys_us}
            extra = ""
            if args.thread:
                t_us = statistics.median(x["thread_cpu_us_per_req"] for x in runs[name])
                medians[name]["thread_cpu_us_per_req"] = t_us
                extra = f"  {t_us:5.2f} µs/req in {args.thread}*"
            print(f"median {name:>12}: {rps:9.0f} req/s  {us:6.1f} µs CPU/req ({sys_us:5.1f} system){extra}")
        if len(arms) == 2:
            a, b = arms[0][0], arms[1][0]
            ratios = [y["rps"] / x["rps"] for x, y in zip(runs[a], runs[b])]
            cpu_ratios = [y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in zip(runs[a], runs[b])]
            print(f"{b} / {a} per round: req/s {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}); "
                  f"CPU/req {', '.join(f'{x:.2f}' for x in cpu_ratios)} (median {statistics.median(cpu_ratios):.2f})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"runs": runs, "medians": medians}, f, indent=1)
    finally:
        # SIGTERM first: an nginx master killed outright leaves its workers running.
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
