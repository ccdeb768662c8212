#!/usr/bin/env python3
"""estafeta vs a private reference Postfix, side by side, in one run (issue 6).

    make bench                      # the default set (a few minutes on 2 cores)
    BENCH_QUICK=1 make bench        # smoke run, under 2 minutes
    .venv/bin/python bench/bench.py --help

Both systems are started by this script with equivalent configurations (see
systems.py and docs/PERFORMANCE.md) and driven by Postfix's smtp-source, runs
interleaved SUT/REF (order alternating) so that machine drift hits both. For every
run: accept rate (messages / smtp-source wall time), end-to-end rate (until the sink
or the Maildir has every message and the queue is empty), CPU ms per message (utime
+stime of the system's whole process tree from /proc, to the end of delivery), peak
RSS (sum over the tree, sampled). Medians and the pairwise ratio estafeta/postfix.

Needs root (the reference Postfix) and Debian's postfix package (smtp-source, smtp-sink).
Writes bench/results/bench-<time>.json (+ latest.json, latest.md) and the scaling
plot (docs/perf-scaling.png for a full run, bench/results/ for a quick one).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import loadgen  # noqa: E402
import sysinfo  # noqa: E402
from systems import (LOCAL_RCPT, RELAY_RCPT, SENDER, EstafetaSystem, PostfixSystem,  # noqa: E402
                     need_tools)

os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"

# name, smtp-source options, delivery mode, which metrics go in the table (metric, goal ratio)
SCENARIOS = {
    "relay-1k": dict(size=1024, reuse=False, mode="relay", rows=[("accept", 2.0), ("e2e", 1.5)],
                     label="1 KB, 1 msg/conn, relayed to smtp-sink"),
    "maildir-1k": dict(size=1024, reuse=False, mode="maildir", rows=[("e2e", 1.5)],
                       label="1 KB, 1 msg/conn, into Maildir (virtual)"),
    "reuse-1k": dict(size=1024, reuse=True, mode="relay", rows=[("accept", 2.0), ("e2e", None)],
                     label="1 KB, connection reuse (-d), relayed"),
    "relay-10k": dict(size=10240, reuse=False, mode="relay", rows=[("accept", None), ("e2e", 1.0)],
                      label="10 KB, relayed"),
    "relay-100k": dict(size=102400, reuse=False, mode="relay", rows=[("accept", None), ("e2e", 1.0)],
                       label="100 KB, relayed"),
}
MSG_SCALE = {1024: 1.0, 10240: 0.6, 102400: 0.2}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


class RunError(RuntimeError):
    pass


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def measure(system, n: int, size: int = 1024, sess: int = 20, reuse: bool = False, rcpts: int = 1,
            mode: str = "relay", timeout: float = 180) -> dict:
    """One smtp-source run against one system; returns its numbers."""
    counter = system.relayed if mode == "relay" else system.mailbox
    to = RELAY_RCPT if mode == "relay" else LOCAL_RCPT
    base = counter()
    roots = system.roots()
    args = ["smtp-source", "-s", str(min(sess, n)), "-m", str(n), "-l", str(size), "-f", SENDER, "-t", to]
    if reuse:
        args.append("-d")
    if rcpts > 1:
        args += ["-r", str(rcpts)]
    args.append(f"127.0.0.1:{system.port}")
    cpu0 = sysinfo.tree_usage(roots)[0]
    with sysinfo.PeakRSS(roots) as rss:
        t0 = time.monotonic()
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RunError(f"{system.name}: smtp-source hit the {timeout}s bound")
        t_acc = time.monotonic() - t0
        if r.returncode:
            raise RunError(f"{system.name}: smtp-source exited {r.returncode}: {(r.stdout + r.stderr)[-400:]}")
        ok = wait_until(lambda: counter() >= base + n and system.queue_empty(), timeout)
        t_e2e = time.monotonic() - t0
        if not ok:
            raise RunError(f"{system.name}: {counter() - base}/{n} delivered after {timeout}s "
                           f"(queue empty: {system.queue_empty()})")
    cpu = sysinfo.tree_usage(roots)[0] - cpu0
    if mode == "maildir":
        system.clear_mailbox()
    return {"n": n, "accept": round(n / t_acc, 1), "e2e": round(n / t_e2e, 1),
            "cpu_ms_per_msg": round(cpu / sysinfo.CLK_TCK / n * 1000, 3), "peak_rss_mb": round(rss.peak / 2**20, 1)}


def med(runs: list[dict], key: str):
    v = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(v), 3) if v else None


def side_by_side(systems, n: int, runs: int, warm: int, **load) -> dict:
    """Warm both, then `runs` interleaved pairs (order alternates); medians and pairwise ratios."""
    for s in systems:
        if warm:
            measure(s, warm, **load)
    res = {s.name: [] for s in systems}
    for i in range(runs):
        order = systems if i % 2 == 0 else systems[::-1]
        for s in order:
            res[s.name].append(measure(s, n, **load))
        log(f"    run {i + 1}: " + "  ".join(
            f"{s.name} acc {res[s.name][-1]['accept']:.0f} e2e {res[s.name][-1]['e2e']:.0f} msg/s "
            f"cpu {res[s.name][-1]['cpu_ms_per_msg']:.2f} ms/msg" for s in systems))
    out = {"load": load, "n": n, "runs": res, "median": {}}
    for s in systems:
        out["median"][s.name] = {k: med(res[s.name], k) for k in ("accept", "e2e", "cpu_ms_per_msg", "peak_rss_mb")}
    if len(systems) == 2:
        a, b = systems[0].name, systems[1].name
        out["pairwise_ratio_median"] = {
            k: round(statistics.median(x[k] / y[k] for x, y in zip(res[a], res[b])), 3) for k in ("accept", "e2e")}
    return out


# ---------------------------------------------------------------- idle sessions
def idle_sessions(workdir: str, n: int, probes: int = 5) -> dict:
    loadgen.raise_nofile(n + 2000)
    # maxproc is divided among the smtpd workers and the kernel does not spread
    # accepts evenly: give each worker room for all n sessions.
    sut = EstafetaSystem(workdir, maxproc=2 * n + 1000)
    try:
        roots = sut.roots()
        rss0 = sysinfo.tree_usage(roots)[1]

        async def go():
            t0 = time.monotonic()
            writers, st = await asyncio.wait_for(loadgen.hold_idle("127.0.0.1", sut.port, n), 300)
            t_open = time.monotonic() - t0
            await asyncio.sleep(1.0)
            lat = []
            for _ in range(probes):
                lat.append(await loadgen.banner_latency("127.0.0.1", sut.port))
                await asyncio.sleep(0.2)
            cpu, rss, nproc = sysinfo.tree_usage(roots)
            smtpd_rss = sum(sysinfo.tree_usage([p])[1] for p in sut.inst.service_pids("smtpd"))
            pss = sysinfo.tree_pss(roots)
            for w in writers:
                w.close()
            await asyncio.sleep(0.5)
            return st, t_open, lat, rss, pss, nproc, len(writers), smtpd_rss

        st, t_open, lat, rss, pss, nproc, held, smtpd_rss = asyncio.run(go())
        good = [x for x in lat if x is not None]
        return {"sessions_requested": n, "sessions_held": held, **st, "open_secs": round(t_open, 2),
                "rss_mb_before": round(rss0 / 2**20, 1), "rss_mb": round(rss / 2**20, 1),
                "pss_mb": round(pss / 2**20, 1), "processes": nproc,
                "smtpd_rss_mb": round(smtpd_rss / 2**20, 1),
                "probe_banner_s": [round(x, 4) if x is not None else None for x in lat],
                "probe_banner_max_s": round(max(good), 4) if len(good) == len(lat) else None}
    finally:
        sut.stop()


# ---------------------------------------------------------------- overload
def overload(system, rate_before: float, factor: float, secs: float, n_after: int, timeout: float,
             client_timeout: float = 30) -> dict:
    base = system.relayed()
    target = max(50.0, factor * rate_before)
    roots = system.roots()
    with sysinfo.PeakRSS(roots) as rss:
        r = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), "overload", str(system.port),
                            "--rate", f"{target:.1f}", "--secs", str(secs), "--timeout", str(client_timeout)],
                           capture_output=True, text=True, timeout=secs + 300)
    if r.returncode:
        raise RunError(f"{system.name}: overload client failed: {r.stderr[-400:]}")
    res = json.loads(r.stdout)
    accepted = res.get("accepted", 0)
    drained = wait_until(lambda: system.relayed() >= base + accepted and system.queue_empty(), timeout)
    delivered = system.relayed() - base
    res.update({"sustainable_e2e_before": rate_before, "factor": factor, "delivered": delivered,
                "lost": max(0, accepted - delivered), "drained": drained, "peak_rss_mb": round(rss.peak / 2**20, 1)})
    after = measure(system, n_after, timeout=timeout)
    res["after"] = after
    res["e2e_after_over_before"] = round(after["e2e"] / rate_before, 3) if rate_before else None
    return res


# ---------------------------------------------------------------- profile
def profile(workdir: str, n: int) -> dict:
    import glob
    import pstats
    pdir = tempfile.mkdtemp(prefix="estafeta-prof-", dir="/tmp")
    os.chmod(pdir, 0o1777)
    sut = EstafetaSystem(workdir, env={"ESTAFETA_PROFILE_DIR": pdir})
    try:
        measure(sut, n, mode="relay")
        measure(sut, n, mode="maildir")
    finally:
        sut.stop()          # the services write their cProfile files at exit
    out = {"messages": {"relay": n, "maildir": n}, "dir": pdir, "services": {}}
    for cmd in ("smtpd", "qmgr", "virtual", "smtp"):
        files = sorted(glob.glob(os.path.join(pdir, f"{cmd}.*.prof")))
        if not files:
            continue
        st = pstats.Stats(*files)
        # The asyncio runner's own time is the event loop (uvloop is C code): mostly idle
        # waiting in epoll. It is left out, and so the shares are of the remaining time.
        items = [(k, v) for k, v in st.stats.items() if not k[0].endswith("asyncio/runners.py")]
        loop_s = sum(v[2] for k, v in st.stats.items() if k[0].endswith("asyncio/runners.py"))
        total = sum(v[2] for _, v in items)

        def row(k, v):
            fn, line, name = k
            short = fn.replace(REPO + "/", "").replace(sys.prefix, "<venv>").replace(sys.base_prefix, "<py>")
            return {"function": f"{short}:{line}({name})", "calls": v[1], "tottime_s": round(v[2], 3),
                    "cumtime_s": round(v[3], 3), "share_pct": round(100 * v[2] / total, 1) if total else None}

        rows = [row(k, v) for k, v in sorted(items, key=lambda kv: -kv[1][2])[:12]]
        ours = [row(k, v) for k, v in sorted(((k, v) for k, v in items if "/estafeta/" in k[0]),
                                             key=lambda kv: -kv[1][3])[:10]]
        out["services"][cmd] = {"files": len(files), "total_s": round(total, 3), "event_loop_s": round(loop_s, 3),
                                "top_by_tottime": rows, "estafeta_top_by_cumtime": ours}
    return out


# ---------------------------------------------------------------- report
def fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def table(result: dict) -> str:
    lines = ["| scenario | metric | estafeta msg/s | postfix msg/s | ratio (pairwise median) | goal | "
             "estafeta CPU ms/msg | postfix CPU ms/msg | estafeta peak RSS MB | postfix peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, sc in result["scenarios"].items():
        m = sc["median"]
        e, p = m.get("estafeta", {}), m.get("postfix", {})
        for metric, goal in SCENARIOS[name]["rows"]:
            ratio = sc.get("pairwise_ratio_median", {}).get(metric)
            lines.append(f"| {name} | {metric} | {fmt(e.get(metric))} | {fmt(p.get(metric))} | {fmt(ratio, '.2f')} | "
                         f"{'>= ' + format(goal, '.1f') if goal else '-'} | {fmt(e.get('cpu_ms_per_msg'), '.2f')} | "
                         f"{fmt(p.get('cpu_ms_per_msg'), '.2f')} | {fmt(e.get('peak_rss_mb'), '.0f')} | "
                         f"{fmt(p.get('peak_rss_mb'), '.0f')} |")
    out = "\n".join(lines)
    idle = result.get("idle")
    if idle:
        out += (f"\n\nIdle sessions (estafeta only; goal: 10,000 held, < 200 MB RSS in total, banner < 1 s): "
                f"{idle['sessions_held']}/{idle['sessions_requested']} held, RSS sum {idle['rss_mb']} MB "
                f"(PSS {idle['pss_mb']} MB, {idle['processes']} processes; {idle['rss_mb_before']} MB before; "
                f"smtpd workers {idle['smtpd_rss_mb']} MB), "
                f"probe banner max {fmt(idle['probe_banner_max_s'], '.3f')} s.")
    ov = result.get("overload")
    if ov:
        out += "\n\n| overload | offered msg/s (target) | accepted | greeting 4xx | greeting > 1 s | refused 4xx/5xx | " \
               "client timeouts/errors | not started (client cap) | lost | e2e after / before |\n" \
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for name, o in ov.items():
            out += (f"\n| {name} | {o['offered_rate']:.0f} ({o['target_rate']:.0f}) | {o.get('accepted', 0)} | "
                    f"{o.get('greeting_4xx', 0)} | {o.get('greeting_slow_over_1s', 0)} | "
                    f"{o.get('refused_4xx', 0)}/{o.get('refused_5xx', 0)} | "
                    f"{o.get('client_timeout', 0)}/{o.get('connection_error', 0)} | {o.get('not_started_over_cap', 0)} | "
                    f"{o['lost']} | {fmt(o['e2e_after_over_before'], '.2f')} |")
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sw = result["sweep"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, (key, xlabel) in enumerate((("size_kb", "message size (KB), log"), ("rcpts", "recipients per message"),
                                         ("sessions", "concurrent sessions"))):
        for sysname, style in (("estafeta", "o-"), ("postfix", "s--")):
            pts = sorted((p["x"], p[sysname]) for p in sw[key] if sysname in p)
            if not pts:
                continue
            xs = [x for x, _ in pts]
            axes[0][col].plot(xs, [v["cpu_ms_per_msg"] for _, v in pts], style, label=sysname)
            axes[1][col].plot(xs, [v["e2e"] for _, v in pts], style, label=sysname)
        for row in (0, 1):
            axes[row][col].set_xlabel(xlabel)
            axes[row][col].grid(True, alpha=0.3)
            if key == "size_kb":
                axes[row][col].set_xscale("log")
        axes[0][col].set_ylabel("CPU ms per message")
        axes[1][col].set_ylabel("end-to-end msg/s (relayed)")
        axes[0][col].legend()
    fig.suptitle(f"estafeta vs Postfix: cost growth ({result['date']}, {result['machine']['cpus']} CPUs, "
                 f"load {result['machine']['loadavg_start']}{', QUICK' if result['quick'] else ''})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- main
def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("-m", "--messages", type=int, default=200 if quick else 2000, help="messages per 1 KB run")
    p.add_argument("-n", "--runs", type=int, default=1 if quick else 3, help="measured runs per system")
    p.add_argument("-s", "--sessions", type=int, default=20)
    p.add_argument("-w", "--warm", type=int, default=100 if quick else 300)
    p.add_argument("--sweep-messages", type=int, default=100 if quick else 800)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--idle", type=int, default=10000, help="idle sessions to hold (0: skip)")
    p.add_argument("--overload-secs", type=float, default=3 if quick else 20, help="0: skip (the issue says 60)")
    p.add_argument("--overload-factor", type=float, default=5.0)
    p.add_argument("--overload-client-timeout", type=float, default=10 if quick else 30,
                   help="per-step timeout of each overload client transaction (s)")
    p.add_argument("--profile", type=int, default=0 if quick else 2000,
                   help="messages per mode for the cProfile pass (0: skip)")
    p.add_argument("--timeout", type=float, default=180, help="bound for each run (send, and drain)")
    p.add_argument("--plot", default=None, help="PNG path (default docs/perf-scaling.png; quick: bench/results/)")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    a = p.parse_args()
    names = [x for x in a.scenarios.split(",") if x]
    for x in names:
        if x not in SCENARIOS:
            p.error(f"unknown scenario {x}")
    need_tools()
    os.makedirs(a.results, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    result = {"date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "quick": quick, "args": vars(a),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "loadavg_start": sysinfo.loadavg()},
              "scenarios": {}, "sweep": {"size_kb": [], "rcpts": [], "sessions": []}}
    busy0 = sysinfo.machine_busy()
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="estafeta-bench-", dir="/tmp")
    systems = []
    try:
        systems = [EstafetaSystem(workdir), PostfixSystem(workdir)]
        log(f"bench: estafeta on :{systems[0].port}, postfix on :{systems[1].port}; "
            f"load average {result['machine']['loadavg_start']}")
        for name in names:
            sc = SCENARIOS[name]
            n = max(50, int(a.messages * MSG_SCALE[sc["size"]]))
            log(f"  {name}: {sc['label']}, {n} msgs x {a.runs} runs, {a.sessions} sessions")
            result["scenarios"][name] = side_by_side(
                systems, n, a.runs, min(a.warm, n), size=sc["size"], sess=a.sessions, reuse=sc["reuse"],
                mode=sc["mode"], timeout=a.timeout)
            result["scenarios"][name]["label"] = sc["label"]
        # scaling sweep (for the plot): size points come from the scenarios above
        for name in names:
            sc = SCENARIOS[name]
            if sc["mode"] == "relay" and not sc["reuse"]:
                result["sweep"]["size_kb"].append({"x": sc["size"] / 1024, **result["scenarios"][name]["median"]})
        if not a.no_sweep:
            base = result["scenarios"].get("relay-1k", {}).get("median")
            for key, values, kw in (("rcpts", (1, 10, 50), "rcpts"), ("sessions", (1, 5, 20, 40), "sess")):
                for v in values:
                    if base and ((key == "rcpts" and v == 1) or (key == "sessions" and v == a.sessions)):
                        result["sweep"][key].append({"x": v, **base})
                        continue
                    n = a.sweep_messages if not (key == "sessions" and v == 1) else max(50, a.sweep_messages // 4)
                    log(f"  sweep {key}={v}: {n} msgs")
                    load = {"sess": a.sessions, "rcpts": 1, "timeout": a.timeout, kw: v}
                    r = side_by_side(systems, n, 1, 0, **load)
                    result["sweep"][key].append({"x": v, **r["median"]})
        if a.overload_secs > 0 and "relay-1k" in result["scenarios"]:
            result["overload"] = {}
            for s in systems:
                before = result["scenarios"]["relay-1k"]["median"][s.name]["e2e"]
                log(f"  overload {s.name}: {a.overload_factor}x {before:.0f} msg/s for {a.overload_secs}s")
                result["overload"][s.name] = overload(s, before, a.overload_factor, a.overload_secs,
                                                      max(50, a.messages // 2), a.timeout, a.overload_client_timeout)
    finally:
        for s in systems:
            s.stop()
    if a.idle:
        log(f"  idle: {a.idle} sessions held by one estafeta instance")
        result["idle"] = idle_sessions(workdir, a.idle)
    if a.profile:
        log(f"  profile: {a.profile} msgs relayed + {a.profile} into Maildir with ESTAFETA_PROFILE_DIR")
        result["profile"] = profile(workdir, a.profile)
    shutil.rmtree(workdir, ignore_errors=True)
    busy1 = sysinfo.machine_busy()
    result["machine"]["loadavg_end"] = sysinfo.loadavg()
    result["machine"]["busy_cpus_avg"] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * os.cpu_count(), 2)
    result["wall_secs"] = round(time.monotonic() - t_start, 1)
    md = (f"estafeta bench {result['date']}{' (QUICK)' if quick else ''}: {os.cpu_count()} CPUs, "
          f"load average {result['machine']['loadavg_start']} -> {result['machine']['loadavg_end']}, "
          f"{a.sessions} sessions, medians of {a.runs} run(s), {result['wall_secs']} s\n\n" + table(result))
    if result.get("profile"):
        md += "\n\nCPU profile (cProfile, top by own time):\n"
        for cmd, sv in result["profile"]["services"].items():
            md += (f"\n{cmd} ({sv['files']} process(es), {sv['total_s']} s profiled outside the event loop, "
                   f"{sv['event_loop_s']} s in the loop itself):\n")
            for row in sv["top_by_tottime"][:8]:
                md += f"  {row['share_pct']:5.1f}%  {row['tottime_s']:7.3f}s  {row['calls']:>8}  {row['function']}\n"
    fn = os.path.join(a.results, f"bench-{stamp.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if quick else ''}.json")
    for path in (fn, os.path.join(a.results, "latest.json")):
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    with open(os.path.join(a.results, "latest.md"), "w") as f:
        f.write(md + "\n")
    plot_path = a.plot or (os.path.join(a.results, "perf-scaling-quick.png") if quick
                           else os.path.join(REPO, "docs", "perf-scaling.png"))
    try:
        plot(result, plot_path)
        log(f"bench: plot {plot_path}")
    except ImportError:
        log("bench: matplotlib missing (pip install -e '.[bench]'); no plot")
    print(md)
    log(f"bench: results {fn}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RunError as e:
        log(f"bench: FAILED: {e}")
        sys.exit(1)
