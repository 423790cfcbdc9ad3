#!/usr/bin/env python3
"""Paired A/B of two netron-bench binaries on the engine section.

    python3 bench/scripts/ab.py OLD_BIN NEW_BIN [ROUNDS] [--raw FILE] [-- extra netron-bench args]
    python3 bench/scripts/ab.py --pool FILE [FILE ...]

Each round runs both binaries back to back (`--json --quick engine`), alternating which goes
first, so a drifting host affects both alike. Per round and per latency row it takes each
binary's p50 and its p50 ratio against the floor measured in the same run; per pipelined depth
it takes new/old calls/s of the same round. It prints, per row, the median over rounds of those
paired ratios with their range and a 95 % bootstrap interval of the median (2,000 resamples,
fixed seed), so a reader sees whether a difference of a few percent is resolvable on this host,
and the medians of memory per idle connection.

`--raw FILE` appends every round's figures to FILE (one JSON object per line); `--pool` prints
the same summary over the rounds of one or more such files, so runs made at different times
can be pooled. No thresholds are applied here: the numbers go into the issue notes (issues 13
and 14 ask for a median p50 ratio within +3 % and pipelined calls/s no worse).
"""
import json
import random
import statistics
import subprocess
import sys


def run(binary, extra):
    out = subprocess.run(
        [binary, "--json", "--quick", *extra, "engine"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tables = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    lat, pipe, mem = {}, {}, None
    for t in tables:
        cols = t["columns"]
        if t["title"].startswith("engine: unary round trip"):
            p50, ratio = cols.index("p50"), cols.index("p50 ratio")
            for r in t["rows"]:
                lat[r[0]] = (float(r[p50].split()[0]), float(r[ratio].rstrip("x")))
        elif t["title"].startswith("engine: pipelined"):
            cps = cols.index("calls/s")
            for r in t["rows"]:
                pipe[r[0]] = float(r[cps])
        elif t["title"].startswith("engine: memory per idle"):
            per = cols.index("per connection")
            mem = float(t["rows"][0][per].split()[0])
    return {"lat": lat, "pipe": pipe, "mem": mem}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ci(xs, resamples=2000):
    """95 % bootstrap interval of the median of `xs` (percentile method, fixed seed)."""
    if len(xs) < 2:
        return (float("nan"), float("nan"))
    rng = random.Random(13)
    meds = sorted(
        statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples)
    )
    return (meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1])


def summarise(rounds):
    p50_ratio, floor_ratio, pipe_ratio = {}, {}, {}
    mem = {"old": [], "new": []}
    for res in rounds:
        for row, (p50_new, fr_new) in res["new"]["lat"].items():
            if row in res["old"]["lat"]:
                p50_old, fr_old = res["old"]["lat"][row]
                p50_ratio.setdefault(row, []).append(p50_new / p50_old)
                floor_ratio.setdefault(row, []).append(fr_new / fr_old)
        for row, n in res["new"]["pipe"].items():
            o = res["old"]["pipe"].get(row)
            if o:
                pipe_ratio.setdefault(row, []).append(n / o)
        for name in ("old", "new"):
            if res[name]["mem"] is not None:
                mem[name].append(res[name]["mem"])
    print(f"{len(rounds)} paired rounds, `netron-bench --json --quick engine` (order alternated)")
    print(
        "row | median new/old p50 | range | median new/old (p50 / same-run floor) | "
        "95% CI of that median | range"
    )
    for row in p50_ratio:
        a, b = p50_ratio[row], floor_ratio[row]
        lo, hi = ci(b)
        print(
            f"{row} | {med(a):.3f} | {min(a):.2f}-{max(a):.2f} | {med(b):.3f} | "
            f"{lo:.3f}-{hi:.3f} | {min(b):.2f}-{max(b):.2f}"
        )
    print("pipelined in flight | median new/old calls/s (same round) | 95% CI | range")
    for row, r in pipe_ratio.items():
        lo, hi = ci(r)
        print(f"{row} | {med(r):.3f} | {lo:.3f}-{hi:.3f} | {min(r):.2f}-{max(r):.2f}")
    o, n = med(mem["old"]), med(mem["new"])
    print(f"memory per idle connection (KiB) | old {o:.1f} | new {n:.1f} | new/old {n / o:.3f}")


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1 :]
    if args and args[0] == "--pool":
        rounds = []
        for path in args[1:]:
            with open(path) as f:
                rounds += [json.loads(line) for line in f if line.strip()]
        summarise(rounds)
        return
    raw = None
    if "--raw" in args:
        i = args.index("--raw")
        raw = args[i + 1]
        args = args[:i] + args[i + 2 :]
    old, new = args[0], args[1]
    n = int(args[2]) if len(args) > 2 else 10
    rounds = []
    for k in range(n):
        order = [("old", old), ("new", new)]
        if k % 2:
            order.reverse()
        res = {}
        for name, binary in order:
            res[name] = run(binary, extra)
            print(f"round {k + 1}/{n}: {name} done", file=sys.stderr, flush=True)
        rounds.append(res)
        if raw:
            with open(raw, "a") as f:
                f.write(json.dumps(res) + "\n")
    summarise(rounds)


if __name__ == "__main__":
    main()
