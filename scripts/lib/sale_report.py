#!/usr/bin/env python3
"""Reports of scripts/bench-sale.sh and scripts/drill-cluster.sh.

    sale_report.py bench RUN                  the Markdown results of a sale; exit 1 when a threshold or the audit failed
    sale_report.py drill RUN FAULT AT_EPOCH   one drill's Markdown table row on stdout, its details on stderr (JSON in RUN/drill.json)

RUN is the run's directory: k6-summary.json (handleSummary), k6-console.log
(the SALE_STATS lines of k6/sale-20k.js: responses per endpoint, status and
second), cpu.jsonl (scripts/lib/proc_cpu.py), redis-PORT-before/after.txt
(INFO all), pg-before/after.txt, haproxy-stats.csv, audit.json/.exit/.err,
db-payments.txt, seed.json, command.txt, k6-command.txt, k6.exit.
"""
import csv
import io
import json
import os
import re
import statistics
import sys

ENDPOINT_ORDER = [
    "POST /v1/queue/tokens",
    "GET /v1/queue/tokens/current",
    "GET /v1/concerts/{id}/performances",
    "GET /v1/performances/{id}/seats",
    "POST /v1/reservations",
    "POST /v1/users/me/balance/charges",
    "POST /v1/payments",
]


def read(run, name, default=None):
    try:
        with open(os.path.join(run, name)) as f:
            return f.read()
    except OSError:
        return default


def load_json(run, name):
    text = read(run, name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def admitted_tally(run):
    """second -> [admitted requests, of them >= 500 ms, summed ms]."""
    out = {}
    for line in (read(run, "k6-console.log") or "").splitlines():
        if line.startswith("SALE_STATS "):
            for sec, (n, slow, ms) in json.loads(line[len("SALE_STATS "):]).get("admitted", {}).items():
                a = out.setdefault(int(sec), [0, 0, 0])
                a[0] += n
                a[1] += slow
                a[2] += ms
    return out


def tallies(run):
    """{(name, status): {second: count}} and the scenario start (epoch ms)."""
    out, t0 = {}, None
    for line in (read(run, "k6-console.log") or "").splitlines():
        if not line.startswith("SALE_STATS "):
            continue
        rec = json.loads(line[len("SALE_STATS "):])
        t0 = t0 or rec.get("t0")
        for key, secs in rec["tally"].items():
            name, _, status = key.rpartition("|")
            row = out.setdefault((name, int(status)), {})
            for s, n in secs.items():
                row[int(s)] = row.get(int(s), 0) + n
    return out, t0


def metric(summary, name, stat=None):
    m = (summary or {}).get("metrics", {}).get(name)
    if not m:
        return None
    vals = m.get("values", {})
    if stat is None:
        return vals
    return vals.get(stat)


def failed_thresholds(summary):
    out = []
    for name, m in (summary or {}).get("metrics", {}).items():
        for expr, t in (m.get("thresholds") or {}).items():
            if not t.get("ok", True):
                out.append(f"{name}: {expr}")
    return out


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def fmt_int(v):
    return "-" if v is None else f"{int(round(v)):,}"


def fmt_rate(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def count(summary, name):
    v = metric(summary, name, "count")
    return int(v) if v is not None else 0


def per_endpoint(tally):
    """name -> {second: count}, name -> {status: count}."""
    secs, statuses = {}, {}
    for (name, status), row in tally.items():
        s = secs.setdefault(name, {})
        for sec, n in row.items():
            s[sec] = s.get(sec, 0) + n
        st = statuses.setdefault(name, {})
        st[status] = st.get(status, 0) + sum(row.values())
    return secs, statuses


def ordered(names):
    known = [n for n in ENDPOINT_ORDER if n in names]
    return known + sorted(n for n in names if n not in ENDPOINT_ORDER)


def redis_info(text):
    info, cmds = {}, {}
    for line in (text or "").splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, _, v = line.partition(":")
        if k.startswith("cmdstat_"):
            m = re.search(r"calls=(\d+)", v)
            if m:
                cmds[k[len("cmdstat_"):]] = int(m.group(1))
        else:
            info[k] = v
    return info, cmds


def busiest_10s(lines, value):
    """The highest rate of value(line) per second over 10 s (or the nearest
    sample pair at least that far apart)."""
    peak, j = 0.0, 0
    for i in range(len(lines)):
        while j < len(lines) and lines[j]["t"] - lines[i]["t"] < 10:
            j += 1
        if j >= len(lines):
            break
        peak = max(peak, (value(lines[j]) - value(lines[i])) / (lines[j]["t"] - lines[i]["t"]))
    return peak


def cpu_table(run):
    lines = [json.loads(l) for l in (read(run, "cpu.jsonl") or "").splitlines() if l.strip()]
    if len(lines) < 2:
        return None
    first, last = lines[0], lines[-1]
    span = last["t"] - first["t"]
    rows = []
    for name in last["cpu"]:
        total = last["cpu"][name] - first["cpu"].get(name, 0)
        peak = busiest_10s(lines, lambda line: line["cpu"].get(name, 0))
        rows.append((name, total, total / span if span else 0, peak))
    machine = last["machine"] - first["machine"]
    peak_machine = busiest_10s(lines, lambda line: line["machine"])
    cols = {c: last.get("columns", {}).get(c, 0) - first.get("columns", {}).get(c, 0) for c in last.get("columns", {})}
    return {"rows": rows, "span": span, "machine": machine, "peak_machine": peak_machine, "columns": cols, "samples": lines}


def haproxy_servers(run):
    text = read(run, "haproxy-stats.csv")
    if not text:
        return []
    rows = list(csv.DictReader(io.StringIO(text.lstrip("# "))))
    out = []
    for r in rows:
        if r.get("pxname") == "booking" and r.get("svname") not in ("FRONTEND", "BACKEND"):
            out.append((r["svname"], int(r.get("stot") or 0), int(r.get("hrsp_5xx") or 0), r.get("status", "")))
    return out


def machine_notes():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    return f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB"


def audit_result(run):
    rc = (read(run, "audit.exit") or "?").strip()
    err = (read(run, "audit.err") or "").strip().splitlines()
    return rc, (err[-1] if err else "")


# Label values hold braces ("/v1/concerts/{concert_id}/performances").
BUCKET_RE = re.compile(r'^http_server_request_duration_seconds_bucket\{((?:[^"}]|"[^"]*")*)\}\s+([0-9.eE+-]+)')
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def server_histograms(run):
    """(method, route) -> sorted [(le, count)] summed over instances, after minus before."""
    out = {}
    for f in sorted(os.listdir(run)):
        m = re.match(r"metrics-(\d+)-after\.txt$", f)
        if not m:
            continue
        for phase, sign in (("after", 1), ("before", -1)):
            for line in (read(run, f"metrics-{m.group(1)}-{phase}.txt") or "").splitlines():
                b = BUCKET_RE.match(line)
                if not b:
                    continue
                labels = dict(LABEL_RE.findall(b.group(1)))
                le = float("inf") if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
                key = (labels.get("method", "?"), labels.get("route", "?"))
                row = out.setdefault(key, {})
                row[le] = row.get(le, 0) + sign * float(b.group(2))
    return {k: sorted(v.items()) for k, v in out.items()}


def hist_quantile(buckets, q):
    """Prometheus-style quantile from cumulative buckets (linear within a bucket)."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return prev_le


def foreign_during(run):
    """What ps-during.txt saw of other `booking seed` processes."""
    text = read(run, "ps-during.txt")
    if text is None:
        return "nothing watched during the run"
    samples = [l for l in text.splitlines() if l.startswith("=== ")]
    seen = [l.split()[1] for l in samples if l.split("foreign-seeds:", 1)[1].strip()]
    if not seen:
        return f"no other `booking seed` in any of {len(samples)} samples during the run"
    return f"**another `booking seed` ran during the run** ({len(seen)} of {len(samples)} samples, {seen[0]}–{seen[-1]} UTC)"


# ----------------------------------------------------------------- bench


def bench(run):
    summary = load_json(run, "k6-summary.json")
    tally, t0 = tallies(run)
    secs, statuses = per_endpoint(tally)
    env = {}
    for kv in (read(run, "k6-command.txt") or "").split():
        if "=" in kv and kv.split("=", 1)[0].isupper():
            k, v = kv.split("=", 1)
            env[k] = v
    users = int(env.get("USERS", "0"))
    arrival = float(env.get("ARRIVAL_SECONDS", "10"))
    failures = []
    out = []
    w = out.append

    w(f"## Sale: {users:,} users through HAProxy ({os.path.basename(run)})")
    w("")
    w(f"Command: `{(read(run, 'command.txt') or '?').strip()}`")
    w("")
    w(f"k6: `{(read(run, 'k6-command.txt') or '?').strip()}`")
    w("")
    build = read(run, "build.txt")
    if build:
        w("Code: " + "; ".join(l.strip() for l in build.splitlines() if l.strip()) + ".")
        w("")
    waited = (read(run, "waited-before.txt") or "0").strip()
    w(f"Machine: {machine_notes()}; everything (3 booking, HAProxy, 6 Redis, 2 PostgreSQL, k6) shares it. "
      f"Waited {waited} s for other `booking seed` loads before the run; {foreign_during(run)} "
      "(ps-before.txt, ps-during.txt: top every 10 s).")
    w("")

    # --- the sale
    dur = ((summary or {}).get("state") or {}).get("testRunDurationMs")
    seed = load_json(run, "seed.json") or {}
    db_pay = (read(run, "db-payments.txt") or "?").strip()
    db_sold = (read(run, "db-sold.txt") or "?").strip()
    w("| the sale | |")
    w("|---|---|")
    w(f"| users / seats | {users:,} / {seed.get('seats', '?'):,} ({seed.get('performances', '?')} dates) |" if isinstance(seed.get('seats'), int) else f"| users | {users:,} |")
    w(f"| k6 run | {dur / 1000:.0f} s |" if dur else "| k6 run | - |")
    w(f"| admitted / paid (k6) / payments in the database / seats sold | {count(summary, 'admitted_users'):,} / {count(summary, 'seats_paid'):,} / {db_pay} / {db_sold} |")
    w(f"| gave up waiting / queue EXPIRED / join failed / abandoned after errors | {count(summary, 'gave_up')} / {count(summary, 'queue_expired')} / {count(summary, 'join_failed')} / {count(summary, 'abandoned_after_errors')} |")
    w(f"| no seat after {env.get('RESERVE_ATTEMPTS', '3')} tries / 409s / listings with nothing left | {count(summary, 'no_seat'):,} / {count(summary, 'seat_conflicts'):,} / {count(summary, 'sold_out_seen'):,} |")
    qw = metric(summary, "queue_wait") or {}
    w(f"| queue wait (join → ACTIVE seen) median / P95 / max | {fmt_ms(qw.get('med'))} / {fmt_ms(qw.get('p(95)'))} / {fmt_ms(qw.get('max'))} |")
    tp = metric(summary, "time_to_paid") or {}
    w(f"| join → paid median / P95 | {fmt_ms(tp.get('med'))} / {fmt_ms(tp.get('p(95)'))} |")
    pp = metric(summary, "polls_per_user") or {}
    w(f"| status polls per user median / P95 / max | {fmt_int(pp.get('med'))} / {fmt_int(pp.get('p(95)'))} / {fmt_int(pp.get('max'))} |")
    w(f"| retries (502/503/504/429/network) | {count(summary, 'retries')} |")
    w("")

    # --- thresholds
    adm = metric(summary, "http_req_duration{admitted:yes}") or {}
    p95, p99 = adm.get("p(95)"), adm.get("p(99)")
    n5xx = count(summary, "http_5xx")
    unexp = metric(summary, "unexpected_errors") or {}
    rc, audit_line = audit_result(run)
    ok95 = p95 is not None and p95 < 500
    w("| threshold | measured | |")
    w("|---|---|---|")
    w(f"| admitted requests P95 < 500 ms | P95 {fmt_ms(p95)}, P99 {fmt_ms(p99)}, median {fmt_ms(adm.get('med'))}, max {fmt_ms(adm.get('max'))} | {'met' if ok95 else '**missed**'} |")
    w(f"| no 5xx | {n5xx} | {'met' if n5xx == 0 else '**missed**'} |")
    ur = unexp.get("rate")
    w(f"| unexpected answers < 1% | {100 * (ur or 0):.3f}% ({unexp.get('passes', 0)} of {unexp.get('passes', 0) + unexp.get('fails', 0)}) | {'met' if (ur or 0) < 0.01 else '**missed**'} |")
    w(f"| `booking audit` clean | exit {rc}: {audit_line} | {'met' if rc == '0' else '**missed**'} |")
    w("")
    if not ok95:
        failures.append(f"admitted P95 {fmt_ms(p95)} (limit 500 ms)")
    if n5xx:
        failures.append(f"{n5xx} responses with a 5xx status")
    if (ur or 0) >= 0.01:
        failures.append(f"unexpected answers {100 * ur:.2f}% (limit 1%)")
    if rc != "0":
        failures.append(f"booking audit exit {rc}: {audit_line}")
    k6_exit = (read(run, "k6.exit") or "?").strip()
    for t in failed_thresholds(summary):
        if not any(t.split(":")[0] in f for f in failures):
            failures.append(f"k6 threshold {t}")
    if k6_exit not in ("0", "99"):
        failures.append(f"k6 exited with {k6_exit}")

    # --- rates per endpoint
    last = max((max(s) for s in secs.values() if s), default=0)
    w(f"Requests per endpoint (k6's own counts, `SALE_STATS` per second; join window = the first {arrival:g} s of the scenario, "
      f"sale = from then to its last request at {last} s):")
    w("")
    w("| endpoint | requests | peak 1 s (at) | mean req/s, join window | mean req/s, sale | P95 | statuses |")
    w("|---|---|---|---|---|---|---|")
    total_all = 0
    all_secs = {}
    for name in ordered(secs):
        s = secs[name]
        total = sum(s.values())
        total_all += total
        for k, v in s.items():
            all_secs[k] = all_secs.get(k, 0) + v
        peak_sec = max(s, key=lambda k: s[k])
        join = sum(v for k, v in s.items() if k < arrival) / arrival
        steady_span = max(1, last + 1 - arrival)
        steady = sum(v for k, v in s.items() if k >= arrival) / steady_span
        p95n = metric(summary, f"http_req_duration{{name:{name}}}", "p(95)")
        st = ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses[name].items()))
        w(f"| `{name}` | {total:,} | {s[peak_sec]:,} ({peak_sec} s) | {fmt_rate(join)} | {fmt_rate(steady)} | {fmt_ms(p95n)} | {st} |")
    if all_secs:
        peak_sec = max(all_secs, key=lambda k: all_secs[k])
        join = sum(v for k, v in all_secs.items() if k < arrival) / arrival
        steady = sum(v for k, v in all_secs.items() if k >= arrival) / max(1, last + 1 - arrival)
        w(f"| all | {total_all:,} | {all_secs[peak_sec]:,} ({peak_sec} s) | {fmt_rate(join)} | {fmt_rate(steady)} | {fmt_ms(metric(summary, 'http_req_duration', 'p(95)'))} | |")
    w("")
    errs = {}
    for (name, status), row in tally.items():
        if status >= 400 or status == 0:
            errs.setdefault(status, {})[name] = sum(row.values())
    if errs:
        w("Responses other than 2xx, by status: " + "; ".join(
            f"**{st or 'network error'}** " + ", ".join(f"{n} × `{e}`" for e, n in sorted(v.items())) for st, v in sorted(errs.items())))
        w("")

    # --- server side
    hists = server_histograms(run)
    if hists:
        w("Server side (booking's `http_server_request_duration_seconds`, all instances, this run only): the time from the "
          "request reaching booking to its answer, without HAProxy, the network or k6's own scheduling:")
        w("")
        w("| route | requests | ≤ 500 ms | P95 | P99 |")
        w("|---|---|---|---|---|")
        for (method, route), b in sorted(hists.items(), key=lambda kv: -(kv[1][-1][1] if kv[1] else 0)):
            total = b[-1][1] if b else 0
            if total < 1 or route.startswith(("/metrics", "/readyz", "/healthz")):
                continue
            le05 = dict(b).get(0.5, 0)
            q95, q99 = hist_quantile(b, 0.95), hist_quantile(b, 0.99)
            w(f"| `{method} {route}` | {int(total):,} | {100 * le05 / total:.1f}% | {fmt_ms(q95 * 1000) if q95 is not None else '-'} | {fmt_ms(q99 * 1000) if q99 is not None else '-'} |")
        w("")

    # --- CPU
    cpu = cpu_table(run)
    if cpu:
        measured = sum(r[1] for r in cpu["rows"])
        w(f"CPU seconds during the k6 run ({cpu['span']:.0f} s, /proc/PID/stat utime+stime every {env.get('CPU_INTERVAL', '2')} s; "
          "PostgreSQL = the postmaster, its live children and the children it reaped):")
        w("")
        w("| process | CPU s | share | mean cores | busiest 10 s, cores |")
        w("|---|---|---|---|---|")
        groups = {}
        for name, total, mean, peak in cpu["rows"]:
            w(f"| {name} | {total:,.1f} | {100 * total / measured if measured else 0:.1f}% | {mean:.2f} | {peak:.2f} |")
            key = re.sub(r"-\d+$", "", name) if name.startswith(("booking", "redis")) else name
            groups[key] = groups.get(key, 0) + total
        w(f"| **all measured** | {measured:,.1f} | 100% | {measured / cpu['span']:.2f} | |")
        other = cpu["machine"] - measured
        w(f"| machine busy (/proc/stat), of which not measured above | {cpu['machine']:,.1f}, {other:,.1f} | | {cpu['machine'] / cpu['span']:.2f} of {os.cpu_count()} | {cpu['peak_machine']:.2f} |")
        w("")
        cols = cpu.get("columns") or {}
        if cols:
            w("Machine CPU by /proc/stat column: " + ", ".join(f"{c} {cols[c]:,.1f} s" for c in ("user", "system", "softirq", "irq", "steal", "iowait") if c in cols) + ".")
            w("")
        w("By kind: " + ", ".join(f"{k} {v:,.1f} s ({100 * v / measured:.0f}%)" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])) + ".")
        if total_all:
            booking_cpu = groups.get("booking", 0)
            w(f"Per request: {1e6 * measured / total_all:,.0f} µs of CPU in all, {1e6 * booking_cpu / total_all:,.0f} µs in booking.")
        w("")

    # --- timeline: per minute, admitted latency against the machine's CPU
    adm_t = admitted_tally(run)
    if adm_t and cpu and t0:
        samples = cpu["samples"]
        start = t0 / 1000
        w("Per minute of the scenario: requests, admitted requests and how many took 500 ms or more, and the machine's CPU "
          "(cores; \"not measured\" = other processes and the kernel's softirq work, which no process is charged for):")
        w("")
        w("| minute | requests | admitted | admitted ≥ 500 ms | admitted mean | machine cores | measured | not measured |")
        w("|---|---|---|---|---|---|---|---|")
        minutes = (last // 60) + 1
        for m in range(minutes):
            lo, hi = m * 60, m * 60 + 60
            reqs = sum(v for s_ in secs.values() for k, v in s_.items() if lo <= k < hi)
            a = [sum(adm_t.get(k, [0, 0, 0])[i] for k in range(lo, hi)) for i in range(3)]
            inside = [x for x in samples if start + lo <= x["t"] <= start + hi]
            if len(inside) >= 2:
                dt = inside[-1]["t"] - inside[0]["t"]
                mach = (inside[-1]["machine"] - inside[0]["machine"]) / dt
                meas = sum(inside[-1]["cpu"][n] - inside[0]["cpu"].get(n, 0) for n in inside[-1]["cpu"]) / dt
                cores = f"{mach:.2f} | {meas:.2f} | {mach - meas:.2f}"
            else:
                cores = "- | - | -"
            share = f"{a[1]:,} ({100 * a[1] / a[0]:.0f}%)" if a[0] else "-"
            mean = fmt_ms(a[2] / a[0]) if a[0] else "-"
            w(f"| {m} | {reqs:,} | {a[0]:,} | {share} | {mean} | {cores} |")
        w("")

    # --- Redis
    ports = sorted({int(m.group(1)) for f in os.listdir(run) for m in [re.match(r"redis-(\d+)-before\.txt$", f)] if m})
    if ports:
        span = cpu["span"] if cpu else None
        w("Redis nodes (INFO before and after the run):")
        w("")
        w("| node | role before → after | commands | per s | busiest commands |")
        w("|---|---|---|---|---|")
        for p in ports:
            bi, bc = redis_info(read(run, f"redis-{p}-before.txt"))
            ai, ac = redis_info(read(run, f"redis-{p}-after.txt"))
            if not ai:
                w(f"| :{p} | {bi.get('role', '?')} → down | - | - | - |")
                continue
            n = int(ai.get("total_commands_processed", 0)) - int(bi.get("total_commands_processed", 0))
            deltas = sorted(((c, v - bc.get(c, 0)) for c, v in ac.items()), key=lambda kv: -kv[1])
            top = ", ".join(f"{c} {v:,}" for c, v in deltas[:4] if v > 0)
            w(f"| :{p} | {bi.get('role', '?')} → {ai.get('role', '?')} | {n:,} | {fmt_rate(n / span) if span else '-'} | {top} |")
        w("")

    pb, pa = read(run, "pg-before.txt"), read(run, "pg-after.txt")
    if pb and pa:
        def pg(text):
            return {l.split()[0]: l.split()[1] for l in text.splitlines() if len(l.split()) == 2}
        b, a = pg(pb), pg(pa)
        parts = []
        for role in ("primary", "replica"):
            try:
                parts.append(f"{role} {int(a[role]) - int(b[role]):,}")
            except (KeyError, ValueError):
                parts.append(f"{role} -")
        w("PostgreSQL transactions in the booking database during the run (pg_stat_database): " + ", ".join(parts) + ".")
        w("")
    hs = haproxy_servers(run)
    if hs:
        w("HAProxy, per instance (sessions since start, 5xx answers, state): " + "; ".join(f"{n} {s:,}, {e} 5xx, {st}" for n, s, e, st in hs) + ".")
        w("")

    if failures:
        w("**FAILED:** " + "; ".join(failures) + ".")
    else:
        w("Every threshold met and the audit is clean.")
    print("\n".join(out))
    return 1 if failures else 0


# ----------------------------------------------------------------- drill


def drill(run, fault, at_epoch):
    summary = load_json(run, "k6-summary.json")
    tally, t0 = tallies(run)
    at = float(at_epoch)
    fault_sec = int((at * 1000 - t0) / 1000) if t0 else None
    total = sum(sum(r.values()) for r in tally.values())
    by_status = {}
    for (name, status), row in tally.items():
        by_status.setdefault(status, {})[name] = sum(row.values())
    n503 = sum(by_status.get(503, {}).values())
    other5xx = {st: v for st, v in by_status.items() if st >= 500 and st != 503}
    net = by_status.get(0, {})
    # Error seconds: any 5xx or network error, relative to the fault.
    err_secs = sorted({s for (name, st), row in tally.items() if st >= 500 or st == 0 for s in row})
    after = [s for s in err_secs if fault_sec is not None and s >= fault_sec - 1]
    pay_secs = sorted({s for (name, st), row in tally.items() if name == "POST /v1/payments" and st in (200, 201) for s in row})
    pay_after = [s for s in pay_secs if fault_sec is not None and s >= fault_sec]
    last_req = max((max(r) for r in tally.values() if r), default=None)
    if after:
        recovery = f"errors from +{after[0] - fault_sec} s to +{after[-1] - fault_sec} s after the fault"
    elif err_secs:
        recovery = f"errors only before the fault (s {err_secs[0]}–{err_secs[-1]})"
    else:
        recovery = "no errors seen"
    if pay_after:
        recovery += f"; payments after the fault from +{pay_after[0] - fault_sec} s"
    if last_req is not None and fault_sec is not None:
        recovery += f"; traffic until +{last_req - fault_sec} s"
    rc, audit_line = audit_result(run)
    k6_paid = count(summary, "seats_paid")
    unknown = count(summary, "payments_unknown")
    db_pay = (read(run, "db-payments.txt") or "?").strip()
    other_txt = "; ".join(
        f"{st}: " + ", ".join(f"{n} × `{e}`" for e, n in sorted(v.items())) for st, v in sorted(other5xx.items())) or "none"
    net_txt = ", ".join(f"{n} × `{e}`" for e, n in sorted(net.items())) or "none"
    pay_txt = f"{k6_paid:,} / {db_pay}" + (f" (+{unknown} unanswered)" if unknown else "")
    try:
        diff = int(db_pay) - k6_paid
        pay_txt += " ✓" if diff == 0 else f" (DB {'+' if diff > 0 else ''}{diff})"
    except ValueError:
        pass
    audit_txt = "clean" if rc == "0" else f"**exit {rc}**: {audit_line}"
    row = f"| {fault} | {total:,} | {n503:,} | {other_txt} | {net_txt} | {pay_txt} | {audit_txt} | {recovery} |"
    details = {
        "fault": fault,
        "fault_epoch": at,
        "fault_second": fault_sec,
        "requests": total,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "error_seconds": err_secs,
        "k6_paid": k6_paid,
        "payments_unknown": unknown,
        "db_payments": db_pay,
        "audit_exit": rc,
        "audit": audit_line,
        "admitted": count(summary, "admitted_users"),
        "gave_up": count(summary, "gave_up"),
        "abandoned": count(summary, "abandoned_after_errors"),
        "retries": count(summary, "retries"),
        "admitted_p95_ms": metric(summary, "http_req_duration{admitted:yes}", "p(95)"),
    }
    with open(os.path.join(run, "drill.json"), "w") as f:
        json.dump(details, f, indent=2)
    print(row)
    print(json.dumps(details), file=sys.stderr)
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "bench":
        sys.exit(bench(sys.argv[2]))
    if len(sys.argv) == 5 and sys.argv[1] == "drill":
        sys.exit(drill(sys.argv[2], sys.argv[3], sys.argv[4]))
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
