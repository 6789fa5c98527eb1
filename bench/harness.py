#!/usr/bin/env python3
"""Side-by-side load test: a direct call to a mock model server, switchyard and nginx.

Run through bench/run.sh, which builds the binaries and installs the load generator (oha).
Python standard library only.

Arms (each a URL the same load generator drives with the same request):
  direct              the fast mock backend itself
  sy-*/ng-*           switchyard / nginx in front of it: single, canary 95/5, shadow (mirror
                      100% to a second fast mock), shadow to a backend that answers after 500 ms,
                      shadow to a port nobody listens on
  sy-single-nolog     switchyard single with the prediction log switched off
  hyper               mock-backend --proxy-to --per-core: the same hyper server, pooled
                      client and runtime shape as switchyard with nothing else (no JSON,
                      routing or log), the floor of the stack switchyard is built on

Each round runs every arm at a fixed rate (latency, oha --latency-correction) and the main arms
at saturation (throughput); the arm order rotates between rounds and the report takes medians
over rounds. The latency arms run in blocks (switchyard single, slow shadow, dead shadow back to
back; the same for nginx), so shadow isolation is also read as the median over rounds of the
ratio within a block, which the machine's drifts move less than a ratio of medians. Then: records vs responses at half of switchyard's max rate, a blue-green switch
and a canary rollback repeated under load, peak RSS. Results: OUT/results.json, OUT/results.md,
raw oha JSON in OUT/raw/.

--smoke runs every arm once for about a second at a tiny load and fails (exit 1) unless every
arm answered, records == responses and the switches under load had no non-2xx response.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BODY = '{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1.01,49.5,2.02,55.0,3.0,-4.0,1.1,1003.0]}]}'
MODEL = "m"
PATH = f"/v2/models/{MODEL}/infer"

# Arms driven at the fixed rate, in blocks: the order of blocks rotates between rounds, and the
# arms of a block always run back to back, so that shadow isolation (a proxy's p99 with a slow or
# dead shadow over its p99 without one) can also be read as a ratio of adjacent runs, which the
# machine's slow drifts move less than the ratio of medians.
LATENCY_BLOCKS = [
    ("direct",), ("hyper",),
    ("sy-single", "sy-shadow-slow", "sy-shadow-dead"), ("sy-single-nolog",), ("sy-canary",), ("sy-shadow",),
    ("ng-single", "ng-shadow-slow", "ng-shadow-dead"), ("ng-canary",), ("ng-shadow",),
]
LATENCY_ARMS = [arm for block in LATENCY_BLOCKS for arm in block]
THROUGHPUT_ARMS = [
    "direct", "hyper", "sy-single", "sy-single-nolog", "sy-canary", "sy-shadow",
    "ng-single", "ng-canary", "ng-shadow",
]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def http(method, url, body=None, timeout=10.0):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Procs:
    """Every process the harness started, stopped (by pid) at exit."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, env=None, stdout=None, stderr=None):
        p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        for _, p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_for(pred, what, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Mock:
    def __init__(self, procs, binary, work, name, threads, delay_ms=0, proxy_to=None):
        out_path = os.path.join(work, f"{name}.out")
        argv = [binary, "--listen", "127.0.0.1:0", "--threads", str(threads), "--delay-ms", str(delay_ms)]
        if proxy_to:
            # Shaped like the gateways' data plane: a current-thread runtime and a backend pool
            # per thread (switchyard's default `runtime.data_plane_threads`).
            argv += ["--proxy-to", proxy_to, "--per-core"]
        with open(out_path, "w") as out:
            self.proc = procs.start(name, argv, stdout=out)

        def addr():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {self.proc.returncode}")
            with open(out_path) as f:
                line = f.readline().strip()
            return line if line.startswith("http://") and line.endswith(tuple("0123456789")) else None
        self.url = wait_for(addr, f"{name} to listen")
        self.hostport = self.url[len("http://"):]

    def infer_count(self):
        _, text = http("GET", self.url + "/stats")
        return json.loads(text)["infer"]


class Switchyard:
    def __init__(self, procs, binary, work, name, backends, serve, log_on=True, workers=2):
        self.name = name
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        versions = "\n".join(
            f'      {v}: {{ url: "{url}", protocol: oip, remote_model: {MODEL}, timeout_ms: 2000 }}'
            for v, url in backends.items())
        config = (f"log: {{ enabled: {'true' if log_on else 'false'} }}\n"
                  f"models:\n  {MODEL}:\n    task: classification\n    versions:\n{versions}\n"
                  f"    serve: {serve}\n")
        self.config_path = os.path.join(self.dir, "switchyard.yaml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.err_path = os.path.join(self.dir, "serve.log")
        self.err = open(self.err_path, "w")
        env = dict(os.environ, TOKIO_WORKER_THREADS=str(workers), RUST_LOG="warn")
        self.proc = procs.start(name, [binary, "serve", "--config", self.config_path,
                                       "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data")],
                                env=env, stderr=self.err)
        self.procs = procs

        def url():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {open(self.err_path).read()}")
            with open(self.err_path) as f:
                for line in f:
                    if line.startswith("switchyard listening on "):
                        return line.split()[3]
            return None
        self.url = wait_for(url, f"{name} to listen")

    def metrics(self):
        _, text = http("GET", self.url + "/metrics")
        return text

    def metric_sum(self, prefix, exclude=None):
        total = 0
        for line in self.metrics().splitlines():
            if line.startswith(prefix) and not (exclude and exclude in line):
                total += float(line.split()[-1])
        return int(total)

    def served(self):
        return self.metric_sum('switchyard_model_calls_total{model="m"', exclude='role="shadow"')

    def shutdown_and_count(self):
        """Stops the gateway (which commits the log) and counts the records in SQLite."""
        self.procs.stop(self.proc)
        db = sqlite3.connect(os.path.join(self.dir, "data", "switchyard.sqlite"))
        try:
            serving = db.execute("select count(*) from predictions where role='serving'").fetchone()[0]
            total = db.execute("select count(*) from predictions").fetchone()[0]
        finally:
            db.close()
        return serving, total


def oha(cfg, url, name, rate=None, duration=None, n=None, conns=None):
    """Runs oha once; returns the numbers the report needs (latencies in µs)."""
    conns = conns or cfg.conns
    argv = [cfg.oha, "--no-tui", "--output-format", "json", "-m", "POST",
            "-H", "content-type: application/json", "-d", BODY, "-c", str(conns)]
    if n is not None:
        argv += ["-n", str(n)]
    else:
        argv += ["-z", f"{duration}s", "--wait-ongoing-requests-after-deadline"]
    if rate is not None:
        argv += ["-q", str(rate), "--latency-correction"]
    argv.append(url + PATH)
    cfg.seq += 1
    raw_path = os.path.join(cfg.out, "raw", f"{cfg.seq:04d}-{name}.json")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or 60) * 4 + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"oha failed for {name}: {proc.stderr[-2000:]}")
    with open(raw_path, "w") as f:
        f.write(proc.stdout)
    data = json.loads(proc.stdout)
    summary = data["summary"]
    codes = {int(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    errors = sum((data.get("errorDistribution") or {}).values())
    pct = data.get("latencyPercentiles") or {}
    elapsed = summary.get("total") or 0.0

    def us(key):
        v = pct.get(key)
        return None if v is None else v * 1e6
    return {
        "arm": name, "rate": rate, "conns": conns, "ok": ok,
        "non2xx": sum(codes.values()) - ok, "errors": errors,
        "p50_us": us("p50"), "p99_us": us("p99"),
        "rps": ok / elapsed if elapsed else 0.0, "elapsed_s": elapsed, "raw": raw_path,
    }


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def start_nginx(procs, cfg, work, mocks, dead):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    ports = {k: free_port() for k in ["SINGLE", "CANARY", "SHADOW", "SHADOW_SLOW", "SHADOW_DEAD"]}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf.template")) as f:
        conf = f.read()
    subs = {"WORK": work, "V1": mocks["v1"].hostport, "V2": mocks["v2"].hostport,
            "SLOW": mocks["slow"].hostport, "DEAD": dead}
    subs.update({f"PORT_{k}": str(v) for k, v in ports.items()})
    for k, v in subs.items():
        conf = conf.replace(f"@{k}@", v)
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
        os.makedirs(os.path.join(work, "nginx-tmp", d), exist_ok=True)
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    err = open(os.path.join(work, "nginx-stderr.log"), "w")
    proc = procs.start("nginx", [nginx, "-p", work, "-c", path], stderr=err)
    urls = {k: f"http://127.0.0.1:{v}" for k, v in ports.items()}

    def up():
        if proc.poll() is not None:
            raise RuntimeError("nginx exited: " + open(os.path.join(work, "nginx-error.log")).read())
        try:
            status, _ = http("POST", urls["SINGLE"] + PATH, BODY, timeout=2)
            return status == 200
        except OSError:
            return False
    wait_for(up, "nginx to answer")
    return proc, {
        "ng-single": urls["SINGLE"], "ng-canary": urls["CANARY"], "ng-shadow": urls["SHADOW"],
        "ng-shadow-slow": urls["SHADOW_SLOW"], "ng-shadow-dead": urls["SHADOW_DEAD"],
    }


def cpu_ticks(pids):
    """utime + stime of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def nginx_hwm_kib(master):
    """Peak RSS of nginx: the master's plus each worker's (children of the master)."""
    return sum(vm_kib(pid, "VmHWM") for pid in [master.pid] + children(master.pid))


def switch_loop(kind, gw, stop, counts):
    """Flips routing under load until `stop` is set: blue-green active colour through
    PUT /admin/v1/routes/m, or a canary rollout applied then rolled back through the rollout API."""
    i = 0
    while not stop.is_set():
        i += 1
        if kind == "bluegreen":
            colour = "green" if i % 2 else "blue"
            status, text = http("PUT", f"{gw.url}/admin/v1/routes/{MODEL}",
                                f"{{kind: blue_green, blue: v1, green: v2, active: {colour}}}")
            counts["calls"] += 1
            if status // 100 != 2:
                counts["failed"].append(f"{status} {text[:200]}")
            else:
                counts["switches"] += 1
            stop.wait(0.25)
        else:
            name = f"canary-{i}"
            spec = json.dumps({"name": name, "model": MODEL, "kind": "canary", "stable": "v1",
                               "candidate": "v2", "min_requests": 1000000, "min_duration_ms": 3600000})
            status, text = http("POST", f"{gw.url}/admin/v1/rollouts", spec)
            counts["calls"] += 1
            if status // 100 != 2:
                counts["failed"].append(f"apply {status} {text[:200]}")
                stop.wait(0.25)
                continue
            stop.wait(0.25)
            status, text = http("POST", f"{gw.url}/admin/v1/rollouts/{name}/rollback", "")
            counts["calls"] += 1
            if status // 100 != 2:
                counts["failed"].append(f"rollback {status} {text[:200]}")
            else:
                counts["switches"] += 1
            stop.wait(0.25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per arm and round")
    ap.add_argument("--rate", type=int, default=5000, help="fixed rate of the latency runs (req/s)")
    ap.add_argument("--conns", type=int, default=32)
    cfg = ap.parse_args()
    if cfg.smoke:
        cfg.rounds, cfg.duration, cfg.rate, cfg.conns = 1, 1.0, 200, 4
    cfg.duration = int(cfg.duration) if float(cfg.duration).is_integer() else cfg.duration
    cfg.out = cfg.out or os.path.join("bench", "out", "smoke" if cfg.smoke else time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(os.path.join(cfg.out, "raw"), exist_ok=True)
    cfg.seq = 0
    work = tempfile.mkdtemp(prefix="switchyard-bench-")
    procs = Procs()
    try:
        return run(cfg, work, procs)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run(cfg, work, procs):
    mock_bin = os.path.join(cfg.bin_dir, "mock-backend")
    sy_bin = os.path.join(cfg.bin_dir, "switchyard")
    started = time.time()
    mocks = {
        "v1": Mock(procs, mock_bin, work, "mock-v1", threads=2),
        "v2": Mock(procs, mock_bin, work, "mock-v2", threads=1),
        "slow": Mock(procs, mock_bin, work, "mock-slow", threads=1, delay_ms=500),
    }
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    v1, v2, slow = mocks["v1"].url, mocks["v2"].url, mocks["slow"].url
    single = "{ kind: single, version: v1 }"
    shadow = "{ kind: shadow, primary: v1, shadows: [{ version: v2, sample: 100 }] }"
    gws = {
        "sy-single": Switchyard(procs, sy_bin, work, "sy-single", {"v1": v1}, single),
        "sy-single-nolog": Switchyard(procs, sy_bin, work, "sy-single-nolog", {"v1": v1}, single, log_on=False),
        "sy-canary": Switchyard(procs, sy_bin, work, "sy-canary", {"v1": v1, "v2": v2},
                                "{ kind: canary, stable: v1, canary: v2, weight: 5 }"),
        "sy-shadow": Switchyard(procs, sy_bin, work, "sy-shadow", {"v1": v1, "v2": v2}, shadow),
        "sy-shadow-slow": Switchyard(procs, sy_bin, work, "sy-shadow-slow", {"v1": v1, "v2": slow}, shadow),
        "sy-shadow-dead": Switchyard(procs, sy_bin, work, "sy-shadow-dead", {"v1": v1, "v2": "http://" + dead}, shadow),
        "sy-records": Switchyard(procs, sy_bin, work, "sy-records", {"v1": v1}, single),
        "sy-bluegreen": Switchyard(procs, sy_bin, work, "sy-bluegreen", {"v1": v1, "v2": v2},
                                   "{ kind: blue_green, blue: v1, green: v2, active: blue }"),
        "sy-rollback": Switchyard(procs, sy_bin, work, "sy-rollback", {"v1": v1, "v2": v2}, single),
    }
    # Two workers, like the gateways (TOKIO_WORKER_THREADS=2) and nginx (worker_processes 2).
    hyper = Mock(procs, mock_bin, work, "hyper-proxy", threads=2, proxy_to=v1)
    nginx, ng_urls = start_nginx(procs, cfg, work, mocks, dead)
    urls = {"direct": v1, "hyper": hyper.url}
    urls.update({k: g.url for k, g in gws.items()})
    urls.update(ng_urls)
    log(f"started 3 mock backends, a bare hyper proxy, {len(gws)} switchyard gateways and nginx "
        f"in {time.time() - started:.1f} s")
    ng_workers = children(nginx.pid)
    # Whose CPU each arm's proxy burns (nginx: its workers; direct: the mock itself).
    cpu_pids = {"direct": [mocks["v1"].proc.pid], "hyper": [hyper.proc.pid]}
    cpu_pids.update({k: [g.proc.pid] for k, g in gws.items()})
    cpu_pids.update({k: ng_workers + [nginx.pid] for k in ng_urls})

    # Warm-up: open connections and pools, fault in pages.
    for arm in [] if cfg.smoke else LATENCY_ARMS:
        oha(cfg, urls[arm], f"warmup-{arm}", rate=min(cfg.rate, 1000), duration=1)

    lat = {a: [] for a in LATENCY_ARMS}
    thr = {a: [] for a in THROUGHPUT_ARMS}
    mirrored = {}
    for r in range(cfg.rounds):
        k = r * 4 % len(LATENCY_BLOCKS)
        blocks = LATENCY_BLOCKS[k:] + LATENCY_BLOCKS[:k]
        if r % 2:
            blocks.reverse()
        # Within a block the arms rotate too, so that no arm always runs first.
        order = [block[(i + r) % len(block)] for block in blocks for i in range(len(block))]
        for arm in order:
            before = {n: m.infer_count() for n, m in mocks.items()}
            res = oha(cfg, urls[arm], arm, rate=cfg.rate, duration=cfg.duration)
            after = {n: m.infer_count() for n, m in mocks.items()}
            res["backend_calls"] = {n: after[n] - before[n] for n in mocks}
            lat[arm].append(res)
            log(f"round {r + 1} latency  {arm:16} p50 {fmt(res['p50_us']):>7} µs  p99 {fmt(res['p99_us']):>9} µs  "
                f"{res['rps']:7.0f} req/s  non-2xx {res['non2xx']} errors {res['errors']}  calls {res['backend_calls']}")
        k = r * 3 % len(THROUGHPUT_ARMS)
        order = THROUGHPUT_ARMS[k:] + THROUGHPUT_ARMS[:k]
        if r % 2:
            order.reverse()
        for arm in order:
            before = {n: m.infer_count() for n, m in mocks.items()}
            ticks = cpu_ticks(cpu_pids[arm])
            res = oha(cfg, urls[arm], f"max-{arm}", duration=cfg.duration)
            ticks = cpu_ticks(cpu_pids[arm]) - ticks
            # CPU time of the proxy per answered request: what throughput on a shared machine
            # is made of, less sensitive than req/s to what the load generator gets.
            res["cpu_us_per_req"] = (ticks / os.sysconf("SC_CLK_TCK") * 1e6 / res["ok"]) if res["ok"] else None
            after = {n: m.infer_count() for n, m in mocks.items()}
            res["backend_calls"] = {n: after[n] - before[n] for n in mocks}
            thr[arm].append(res)
            log(f"round {r + 1} max      {arm:16} {res['rps']:7.0f} req/s  p50 {fmt(res['p50_us']):>7} µs  "
                f"cpu {fmt(res['cpu_us_per_req'], ' µs/req', 1)}  non-2xx {res['non2xx']} errors {res['errors']}")
        for arm in ("sy-shadow", "ng-shadow"):
            mirrored.setdefault(arm, []).append(lat[arm][-1]["backend_calls"]["v2"])

    # Records vs responses at half of switchyard's max rate (a fixed number of requests, so
    # that every response oha counts was also completed by the gateway).
    sy_max = med([x["rps"] for x in thr["sy-single"]]) or 0
    half = max(int(sy_max / 2), 50)
    n_records = max(int(half * cfg.duration), 100)
    rec = oha(cfg, urls["sy-records"], "records", rate=half, n=n_records)
    time.sleep(0.5)
    rec_gw = gws["sy-records"]
    rec_served = rec_gw.served()
    rec_dropped = rec_gw.metric_sum("switchyard_log_dropped_records_total")
    # The warm-up went to another gateway; sy-records saw only this run.
    records_serving, _ = rec_gw.shutdown_and_count()
    records = {"rate": half, "requests": n_records, "responses_2xx": rec["ok"], "non2xx": rec["non2xx"],
               "served_counter": rec_served, "records": records_serving, "dropped": rec_dropped,
               "p99_us": rec["p99_us"]}
    log(f"records: {records}")

    # Blue-green switch and canary rollback, repeated under load, against steady runs of the
    # same gateway (interleaved).
    switch = {"bluegreen": {"steady": [], "switching": [], "switches": 0, "failed": [], "v2_calls": 0},
              "rollback": {"steady": [], "switching": [], "switches": 0, "failed": [], "v2_calls": 0}}
    for r in range(cfg.rounds):
        for kind, gw_name in (("bluegreen", "sy-bluegreen"), ("rollback", "sy-rollback")):
            gw = gws[gw_name]
            phases = ["steady", "switching"] if r % 2 == 0 else ["switching", "steady"]
            for phase in phases:
                if phase == "steady" and kind == "bluegreen":
                    http("PUT", f"{gw.url}/admin/v1/routes/{MODEL}", "{kind: blue_green, blue: v1, green: v2, active: blue}")
                stop = threading.Event()
                counts = {"switches": 0, "calls": 0, "failed": []}
                before_v2 = mocks["v2"].infer_count()
                t = None
                if phase == "switching":
                    t = threading.Thread(target=switch_loop, args=(kind, gw, stop, counts))
                    t.start()
                try:
                    res = oha(cfg, gw.url, f"{kind}-{phase}", rate=cfg.rate, duration=cfg.duration)
                finally:
                    stop.set()
                    if t:
                        t.join()
                s = switch[kind]
                s[phase].append(res)
                if phase == "switching":
                    s["switches"] += counts["switches"]
                    s["failed"] += counts["failed"]
                    s["v2_calls"] += mocks["v2"].infer_count() - before_v2
                log(f"round {r + 1} {kind:9} {phase:9} p99 {fmt(res['p99_us']):>9} µs  non-2xx {res['non2xx']} "
                    f"errors {res['errors']}  switches {counts['switches']} failed admin calls {len(counts['failed'])}")

    rss = {name: vm_kib(g.proc.pid, "VmHWM") for name, g in gws.items() if g.proc.poll() is None}
    rss["sy-records"] = None
    rss_nginx = nginx_hwm_kib(nginx)
    # With the log switched off, nothing may have been written.
    records["log_off_records"] = gws["sy-single-nolog"].shutdown_and_count()[1]

    results = build_results(cfg, lat, thr, records, switch, rss, rss_nginx, mirrored)
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(cfg.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    log(f"finished in {time.time() - started:.0f} s; raw results in {cfg.out}")
    if cfg.smoke:
        problems = smoke_problems(results)
        for p in problems:
            log(f"SMOKE FAILURE: {p}")
        if problems:
            return 1
        log("smoke OK")
    return 0


def build_results(cfg, lat, thr, records, switch, rss, rss_nginx, mirrored):
    def lat_summary(runs):
        return {"p50_us": med([x["p50_us"] for x in runs]), "p99_us": med([x["p99_us"] for x in runs]),
                "rps": med([x["rps"] for x in runs]), "ok": sum(x["ok"] for x in runs),
                "non2xx": sum(x["non2xx"] for x in runs), "errors": sum(x["errors"] for x in runs),
                "rounds": [{k: x[k] for k in ("p50_us", "p99_us", "rps", "non2xx", "errors")} for x in runs]}

    def thr_summary(runs):
        return {"rps": med([x["rps"] for x in runs]), "p50_us": med([x["p50_us"] for x in runs]),
                "ok": sum(x["ok"] for x in runs), "non2xx": sum(x["non2xx"] for x in runs),
                "errors": sum(x["errors"] for x in runs), "rounds": [x["rps"] for x in runs],
                "cpu_us_per_req": med([x.get("cpu_us_per_req") for x in runs]),
                "cpu_rounds": [x.get("cpu_us_per_req") for x in runs]}
    return {
        "settings": {"smoke": cfg.smoke, "rounds": cfg.rounds, "duration_s": cfg.duration, "rate": cfg.rate,
                     "conns": cfg.conns, "machine": machine()},
        "latency": {a: lat_summary(r) for a, r in lat.items()},
        "throughput": {a: thr_summary(r) for a, r in thr.items()},
        "mirrored_calls_at_fixed_rate": mirrored,
        # Per round, the p99 with a slow / dead shadow over the p99 without one, from the same
        # block of back-to-back runs.
        "isolation_paired": {
            prox: {kind: [ratio(a["p99_us"], b["p99_us"])
                          for a, b in zip(lat[f"{prox}-shadow-{kind}"], lat[f"{prox}-single"])]
                   for kind in ("slow", "dead")}
            for prox in ("sy", "ng")},
        "records": records,
        "switch": {k: {"steady": lat_summary(v["steady"]), "switching": lat_summary(v["switching"]),
                       "switches": v["switches"], "failed_admin_calls": v["failed"], "v2_calls": v["v2_calls"]}
                   for k, v in switch.items()},
        "peak_rss_kib": {"switchyard": rss, "nginx_master_plus_workers": rss_nginx},
    }


def machine():
    info = {"nproc": os.cpu_count()}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        info["dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                            capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return info


def ratio(a, b):
    return None if a is None or not b else a / b


def minus(a, b):
    return None if a is None or b is None else a - b


def fmt(v, unit="", digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{unit}"


def verdict(ok):
    return "met" if ok else "**missed**"


def markdown(res):
    L, T = res["latency"], res["throughput"]
    s = res["settings"]
    out = []
    out.append(f"Fixed rate {s['rate']:,} req/s ({s['conns']} connections, oha --latency-correction); "
               f"saturation with {s['conns']} connections; {s['rounds']} round(s) × {s['duration_s']} s per arm, medians.\n")
    out.append("CPU µs/req: CPU time (user + system) of the proxy's own processes during the saturation run, "
               "per answered request (direct: the mock backend's).\n")
    out.append("| mode | arm | p50 @ fixed rate | p99 @ fixed rate | max req/s | CPU µs/req | p50 − direct | p99 / direct | max req/s / nginx |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    d = L["direct"]
    out.append(f"| – | direct | {fmt(d['p50_us'], ' µs')} | {fmt(d['p99_us'], ' µs')} | {fmt(T['direct']['rps'])} | "
               f"{fmt(T['direct'].get('cpu_us_per_req'), '', 1)} | – | – | – |")

    def row(mode, name, arm, vs_ng):
        l, t = L[arm], T[arm]
        return (f"| {mode} | {name} | {fmt(l['p50_us'], ' µs')} | {fmt(l['p99_us'], ' µs')} | {fmt(t['rps'])} | "
                f"{fmt(t.get('cpu_us_per_req'), '', 1)} | {fmt(minus(l['p50_us'], d['p50_us']), ' µs')} | "
                f"{fmt(ratio(l['p99_us'], d['p99_us']), '', 2)} | {fmt(vs_ng, '', 2)} |")
    for mode in ["single", "canary", "shadow"]:
        for prox in ["sy", "ng"]:
            arm = f"{prox}-{mode}"
            vs_ng = ratio(T[arm]["rps"], T[f"ng-{mode}"]["rps"]) if prox == "sy" else None
            out.append(row(mode, "switchyard" if prox == "sy" else "nginx", arm, vs_ng))
        if mode == "single":
            out.append(row("single, log off", "switchyard", "sy-single-nolog",
                           ratio(T["sy-single-nolog"]["rps"], T["ng-single"]["rps"])))
            out.append(row("single", "bare hyper proxy", "hyper", ratio(T["hyper"]["rps"], T["ng-single"]["rps"])))
    out.append("")
    out.append("Shadow isolation: primary p99 at the fixed rate with the shadow slow (500 ms) or down, divided by "
               "the same proxy's p99 without a shadow (single mode).\n")
    out.append("Ratios: of the medians, and (paired) the median over rounds of the ratio within each round's "
               "block of back-to-back runs, with the per-round ratios in brackets.\n")
    out.append("| proxy | p99 no shadow | p99 shadow fast | p99 shadow 500 ms | p99 shadow down | slow / off | down / off "
               "| slow / off, paired | down / off, paired |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    paired = res["isolation_paired"]

    def paired_cell(rs):
        return f"{fmt(med(rs), '', 2)} ({', '.join(fmt(x, '', 2) for x in rs)})"
    for prox, name in (("sy", "switchyard"), ("ng", "nginx")):
        off, fast = L[f"{prox}-single"]["p99_us"], L[f"{prox}-shadow"]["p99_us"]
        slow, down = L[f"{prox}-shadow-slow"]["p99_us"], L[f"{prox}-shadow-dead"]["p99_us"]
        rps_slow = L[f"{prox}-shadow-slow"]["rps"]
        out.append(f"| {name} | {fmt(off, ' µs')} | {fmt(fast, ' µs')} | {fmt(slow, ' µs')} (served {fmt(rps_slow)} req/s) | "
                   f"{fmt(down, ' µs')} | {fmt(ratio(slow, off), '', 2)} | {fmt(ratio(down, off), '', 2)} | "
                   f"{paired_cell(paired[prox]['slow'])} | {paired_cell(paired[prox]['dead'])} |")
    out.append("")
    rec = res["records"]
    out.append(f"Prediction log: max req/s log on / log off = {fmt(ratio(T['sy-single']['rps'], T['sy-single-nolog']['rps']), '', 3)}; "
               f"at {rec['rate']:,} req/s (half of max) for {rec['requests']:,} requests: {rec['responses_2xx']:,} 2xx responses, "
               f"{rec['served_counter']:,} served (gateway counter), **{rec['records']:,} records** in SQLite, "
               f"{rec['dropped']} dropped.\n")
    out.append("| switch under load | steady p99 | p99 while switching | ratio | switches | non-2xx (steady / switching) | failed admin calls | calls to v2 |")
    out.append("|---|---|---|---|---|---|---|---|")
    for kind, name in (("bluegreen", "blue-green flip every 250 ms (PUT /admin/v1/routes)"),
                       ("rollback", "canary apply → rollback every 500 ms (rollout API)")):
        sw = res["switch"][kind]
        out.append(f"| {name} | {fmt(sw['steady']['p99_us'], ' µs')} | {fmt(sw['switching']['p99_us'], ' µs')} | "
                   f"{fmt(ratio(sw['switching']['p99_us'], sw['steady']['p99_us']), '', 2)} | {sw['switches']} | "
                   f"{sw['steady']['non2xx'] + sw['steady']['errors']} / {sw['switching']['non2xx'] + sw['switching']['errors']} | "
                   f"{len(sw['failed_admin_calls'])} | {sw['v2_calls']:,} |")
    out.append("")
    rss = {k: v for k, v in res["peak_rss_kib"]["switchyard"].items() if v}
    worst = max(rss.items(), key=lambda kv: kv[1]) if rss else ("–", 0)
    out.append(f"Peak RSS (VmHWM): switchyard max {worst[1] / 1024:.1f} MiB ({worst[0]}); "
               + ", ".join(f"{k} {v / 1024:.1f}" for k, v in sorted(rss.items()))
               + f" MiB; nginx master + 2 workers {res['peak_rss_kib']['nginx_master_plus_workers'] / 1024:.1f} MiB.\n")

    # Targets.
    out.append("| target | value | verdict |")
    out.append("|---|---|---|")
    for mode in ["single", "canary", "shadow"]:
        l = L[f"sy-{mode}"]
        added = minus(l["p50_us"], d["p50_us"])
        out.append(f"| {mode}: added p50 ≤ 100 µs | {fmt(added, ' µs')} | {verdict(added is not None and added <= 100)} |")
        r99 = ratio(l["p99_us"], d["p99_us"])
        out.append(f"| {mode}: p99 / direct ≤ 1.5 | {fmt(r99, '', 2)} | {verdict(r99 is not None and r99 <= 1.5)} |")
    for mode in ["canary", "shadow"]:
        r = ratio(T[f"sy-{mode}"]["rps"], T[f"ng-{mode}"]["rps"])
        out.append(f"| {mode}: max req/s ≥ nginx | {fmt(r, '', 2)}× | {verdict(r is not None and r >= 1.0)} |")
    for kind in ["slow", "dead"]:
        r = ratio(L[f"sy-shadow-{kind}"]["p99_us"], L["sy-single"]["p99_us"])
        rp = med(paired["sy"][kind])
        out.append(f"| shadow {'500 ms' if kind == 'slow' else 'down'}: primary p99 ≤ 1.1× shadow-off (paired) | "
                   f"{fmt(rp, '', 2)} (of the medians: {fmt(r, '', 2)}) | {verdict(rp is not None and rp <= 1.1)} |")
    r = ratio(T["sy-single"]["rps"], T["sy-single-nolog"]["rps"])
    out.append(f"| log on / off throughput ≥ 0.9 | {fmt(r, '', 3)} | {verdict(r is not None and r >= 0.9)} |")
    out.append(f"| records == responses at half max rate | {rec['records']:,} / {rec['responses_2xx']:,} | "
               f"{verdict(rec['records'] == rec['responses_2xx'] == rec['requests'])} |")
    for kind, name in (("bluegreen", "blue-green"), ("rollback", "canary rollback")):
        sw = res["switch"][kind]
        bad = sw["switching"]["non2xx"] + sw["switching"]["errors"]
        r = ratio(sw["switching"]["p99_us"], sw["steady"]["p99_us"])
        out.append(f"| {name} under load: zero non-2xx | {bad} | {verdict(bad == 0)} |")
        out.append(f"| {name} under load: p99 ≤ 1.5× steady | {fmt(r, '', 2)} | {verdict(r is not None and r <= 1.5)} |")
    out.append(f"| peak RSS ≤ 50 MB | {worst[1] / 1024:.1f} MiB | {verdict(worst[1] <= 50 * 1000 * 1000 / 1024)} |")
    return "\n".join(out) + "\n"


def smoke_problems(res):
    problems = []
    for section in ("latency", "throughput"):
        for arm, r in res[section].items():
            if r["ok"] == 0:
                problems.append(f"{section} {arm}: no 2xx response")
            if r["non2xx"] or r["errors"]:
                problems.append(f"{section} {arm}: {r['non2xx']} non-2xx, {r['errors']} errors")
    for arm, calls in res["mirrored_calls_at_fixed_rate"].items():
        if not sum(calls):
            problems.append(f"{arm}: the shadow backend received no mirrored call")
    rec = res["records"]
    if not (rec["records"] == rec["responses_2xx"] == rec["requests"] and rec["dropped"] == 0):
        problems.append(f"records != responses: {rec}")
    if rec["log_off_records"] != 0:
        problems.append(f"the gateway with log.enabled: false wrote {rec['log_off_records']} records")
    for kind, sw in res["switch"].items():
        bad = sw["switching"]["non2xx"] + sw["switching"]["errors"] + sw["steady"]["non2xx"] + sw["steady"]["errors"]
        if bad:
            problems.append(f"{kind}: {bad} non-2xx responses or errors under load")
        if sw["switches"] == 0 or sw["failed_admin_calls"]:
            problems.append(f"{kind}: {sw['switches']} switches, failed admin calls {sw['failed_admin_calls']}")
        if sw["v2_calls"] == 0:
            problems.append(f"{kind}: no request reached v2 while switching")
    return problems


if __name__ == "__main__":
    sys.exit(main())
