"""Turns one benchmark run's JSON files into the results table of BENCHMARKS.md."""
import json
import os
import subprocess
import sys

run, backend = sys.argv[1], sys.argv[2]


def load(name):
    path = os.path.join(run, name + ".json")
    return json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}


def unexpected(result):
    """Responses other than 200/201 and the expected 409 conflicts."""
    return sum(n for s, n in result.get("statuses", {}).items() if s not in ("200", "201", "409"))


empty, pgb, rb = load("empty"), load("pgbench"), load("redis-benchmark")
# The reference measured right after the claims (same disk weather); runs
# before it had only the one at the start.
pgb_claims = load("pgbench-after-claims") or pgb
poll, hot, claim, race = load("queue-poll"), load("hot-seat"), load("claim"), load("race")
audit, idle = load("audit"), load("rss-idle")

claims_per_s = claim.get("statuses", {}).get("201", 0) / claim["seconds"] if claim else 0
hot_5xx = unexpected(hot)
rows = []


def row(what, figure, goal, met, verdict=None):
    rows.append(f"| {what} | {figure} | {goal} | {verdict or ('met' if met else '**missed**')} |")


if poll and empty:
    ratio = poll["rps"] / empty["rps"]
    row("queue status poll", f"{poll['rps']:,.0f} req/s, P99 {poll['p99_ms']:.2f} ms ({ratio:.0%} of empty handler)",
        "≥ 40,000 req/s, P99 < 10 ms, ≥ 50% of empty", poll["rps"] >= 40000 and poll["p99_ms"] < 10 and ratio >= 0.5)
if hot:
    row("hot-seat reservation attempts", f"{hot['rps']:,.0f} req/s, P99 {hot['p99_ms']:.2f} ms ({hot_5xx} unexpected statuses)",
        "≥ 20,000/s, P99 < 20 ms", hot["rps"] >= 20000 and hot["p99_ms"] < 20 and hot_5xx == 0)
if claim and pgb_claims:
    ratio = claims_per_s / pgb_claims["tps"]
    against = "pgbench right after" if pgb_claims is not pgb else "pgbench"
    row("claims of free seats", f"{claims_per_s:,.0f} claims/s, P99 {claim['p99_ms']:.2f} ms ({ratio:.0%} of {against})",
        "≥ 50% of pgbench's claim TPS", ratio >= 0.5)
if race:
    row("1,000 users on 100 seats", f"{race['seconds']:.3f} s, {race['holds']} holds, "
        f"{race['holds'] - race['distinct_seats_held']} duplicates", "< 1 s, 0 duplicates",
        race["seconds"] < 1 and race["holds"] == race["distinct_seats_held"] == 100)
on, off = load("hot-seat-telemetry-on"), load("hot-seat-telemetry-off")
if on and off:
    cost = 1 - on["rps"] / off["rps"]
    # One pair scatters by ten points either way on a shared machine; the
    # goal is judged by the many-round A/B of scripts/bench-telemetry.sh.
    row("telemetry cost on the hot reservation path (one pair)", f"on {on['rps']:,.0f} req/s vs off {off['rps']:,.0f} req/s "
        f"({cost:+.1%} cost)", "≤ 10%, judged by `scripts/bench-telemetry.sh`", None, "see the A/B")
poll_off = load("queue-poll-telemetry-off")
if poll_off and poll and empty:
    ratio = poll_off["rps"] / empty["rps"]
    row("queue status poll, telemetry off", f"{poll_off['rps']:,.0f} req/s, P99 {poll_off['p99_ms']:.2f} ms "
        f"({ratio:.0%} of empty handler)", "≥ 40,000 req/s, P99 < 10 ms, ≥ 50% of empty",
        poll_off["rps"] >= 40000 and poll_off["p99_ms"] < 10 and ratio >= 0.5 and not unexpected(poll_off))
if off:
    row("hot-seat reservation attempts, telemetry off",
        f"{off['rps']:,.0f} req/s, P99 {off['p99_ms']:.2f} ms ({unexpected(off)} unexpected statuses)",
        "≥ 20,000/s, P99 < 20 ms", off["rps"] >= 20000 and off["p99_ms"] < 20 and not unexpected(off))
tickets = sorted((load(os.path.basename(f)[:-5]) for f in os.listdir(run)
                  if f.startswith("ticket-open-") and f.endswith(".json") and "summary" not in f), key=lambda t: t["users"])
if tickets:
    passed = [t["users"] for t in tickets if t["passed"]]
    for t in tickets:
        summary = load(f"ticket-open-{t['users']}-summary")
        p95 = summary.get("metrics", {}).get("http_req_duration{admitted:yes}", {}).get("values", {}).get("p(95)")
        errors = summary.get("metrics", {}).get("unexpected_errors", {}).get("values", {}).get("rate")
        figure = f"{t['users']} users: " + ("passed" if t["passed"] else "failed")
        if p95 is not None:
            figure += f", admitted P95 {p95:.0f} ms"
        if errors is not None:
            figure += f", unexpected errors {errors:.2%}"
        row("ticket-open scenario (k6)", figure, "thresholds pass at 20,000 users", t["passed"] and t["users"] >= 20000)
    row("ticket-open: largest user count that passes", str(max(passed)) if passed else "none of " +
        ", ".join(str(t["users"]) for t in tickets), "20,000", bool(passed) and max(passed) >= 20000)
if idle:
    row("idle RSS", f"{idle['rss_kib'] / 1024:.1f} MB", "< 50 MB", idle["rss_kib"] < 50 * 1024)
violations = []
if audit:
    if audit["seats_sold_twice"] or audit["seats_with_two_live_holds"]:
        violations.append("double booking")
    if audit["payments"] != audit["sold_seats"]:
        violations.append("payments != sold seats")
    if audit["charges_total"] - audit["payments_total"] != audit["balances_total"]:
        violations.append("money not conserved")
row("invariants (booking audit)", ", ".join(violations) or "all hold", "no violation", audit and not violations)

try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"
print(f"### Run {os.path.basename(run)} — backend `{backend}`, commit `{commit}`\n")
print("| what | measured | goal | |\n|---|---|---|---|")
print("\n".join(rows))
print("\nReference points measured in the same run:\n")
if empty:
    print(f"- empty axum handler (`wrk -t1 -c64`): {empty['rps']:,.0f} req/s, P99 {empty['p99_ms']:.2f} ms")
if pgb:
    print(f"- pgbench, single conditional seat-claim UPDATE, 16 clients: {pgb['tps']:,.0f} TPS, "
          f"{pgb['latency_avg_ms']:.2f} ms average" + (
              f"; right after the claims: {pgb_claims['tps']:,.0f} TPS, {pgb_claims['latency_avg_ms']:.2f} ms average"
              if pgb_claims is not pgb else ""))
if rb:
    print("- redis-benchmark, 32 clients: " + ", ".join(f"{k.upper()} {v:,.0f}/s" for k, v in sorted(rb.items())))
