#!/usr/bin/env python3
"""Paired A/B of two netron-bench binaries on the engine section.

    python3 bench/scripts/ab.py OLD_BIN NEW_BIN [ROUNDS] [-- extra netron-bench args]

Each round runs both binaries back to back (`--json --quick engine`), alternating which goes
first, so a drifting host affects both alike. Per round and per latency row it takes each
binary's p50 and its p50 ratio against the floor measured in the same run; it prints, per
row, the median over rounds of new/old p50 and of new/old floor ratio, with their range, and
the medians of pipelined calls/s and memory per idle connection. No thresholds are applied
here: the numbers go into the issue note (issue 13 asks for a median p50 ratio within +3 %).
"""
import json
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
    return lat, pipe, mem


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1 :]
    old, new = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 10
    p50_ratio, floor_ratio = {}, {}
    pipe = {"old": {}, "new": {}}
    mem = {"old": [], "new": []}
    for k in range(rounds):
        order = [("old", old), ("new", new)]
        if k % 2:
            order.reverse()
        res = {}
        for name, binary in order:
            res[name] = run(binary, extra)
            print(f"round {k + 1}/{rounds}: {name} done", file=sys.stderr, flush=True)
        for row, (p50_new, fr_new) in res["new"][0].items():
            if row in res["old"][0]:
                p50_old, fr_old = res["old"][0][row]
                p50_ratio.setdefault(row, []).append(p50_new / p50_old)
                floor_ratio.setdefault(row, []).append(fr_new / fr_old)
        for name in ("old", "new"):
            for row, v in res[name][1].items():
                pipe[name].setdefault(row, []).append(v)
            if res[name][2] is not None:
                mem[name].append(res[name][2])
    print(f"{rounds} paired rounds, `netron-bench --json --quick engine` (order alternated)")
    print("row | median new/old p50 | range | median new/old (p50 / same-run floor) | range")
    for row in p50_ratio:
        a, b = p50_ratio[row], floor_ratio[row]
        print(
            f"{row} | {med(a):.3f} | {min(a):.2f}-{max(a):.2f} | {med(b):.3f} | "
            f"{min(b):.2f}-{max(b):.2f}"
        )
    print("pipelined in flight | median calls/s old | new | new/old")
    for row in pipe["new"]:
        o, n = med(pipe["old"].get(row, [])), med(pipe["new"][row])
        print(f"{row} | {o:.0f} | {n:.0f} | {n / o:.3f}")
    o, n = med(mem["old"]), med(mem["new"])
    print(f"memory per idle connection (KiB) | old {o:.1f} | new {n:.1f} | new/old {n / o:.3f}")


if __name__ == "__main__":
    main()
