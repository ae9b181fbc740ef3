#!/usr/bin/env python3
"""Print the medians of the runtime benches as Markdown tables.

Reads criterion's target/criterion/<group>/<bench>/new/estimates.json (written by
`cargo bench --bench runtime`) and prints:
- the workloads of tokio's rt_multi_threaded bench: green, async, tokio-2 (and
  tokio-default when present), with the ratios green/tokio and async/tokio (below 1 means
  greenrt is faster);
- every other group (switch, enter, spawn_join, bridge, tracing_cost) as bench/median,
  tracing_cost also as a ratio to its `none_never_set` run. `tracing_cost/feature_off`
  appears after `cargo bench --bench runtime --no-default-features -- tracing_cost`.

Usage: python3 benches/table.py [path/to/target/criterion]
Stdlib only.
"""

import json
import os
import sys

WORKLOADS = ["spawn_many", "spawn_many_remote", "yield_many", "ping_pong", "chained_spawn"]
OTHER_GROUPS = ["switch", "enter", "spawn_join", "bridge", "tracing_cost"]


def default_root():
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
    return os.path.normpath(os.path.join(target, "criterion"))


def median_ns(root, group, bench):
    path = os.path.join(root, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def fmt_time(ns):
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def benches_in(root, group):
    """Benchmark names of a group in the order criterion ran them (oldest file first)."""
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        return []
    found = []
    for name in os.listdir(gdir):
        path = os.path.join(gdir, name, "new", "estimates.json")
        if os.path.isfile(path):
            found.append((os.path.getmtime(path), name))
    return [name for _, name in sorted(found)]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else default_root()
    if not os.path.isdir(root):
        sys.exit(f"no criterion results in {root}: run `cargo bench --bench runtime` first")

    has_default = any(median_ns(root, w, "tokio_default") is not None for w in WORKLOADS)
    head = ["workload", "green", "async", "tokio-2"]
    if has_default:
        head.append("tokio-default")
    head += ["green/tokio", "async/tokio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for w in WORKLOADS:
        green = median_ns(root, w, "green")
        asyn = median_ns(root, w, "async")
        tokio = median_ns(root, w, "tokio_2w")
        row = [w, fmt_time(green), fmt_time(asyn), fmt_time(tokio)]
        if has_default:
            row.append(fmt_time(median_ns(root, w, "tokio_default")))
        row += [fmt_ratio(green, tokio), fmt_ratio(asyn, tokio)]
        print("| " + " | ".join(row) + " |")

    for group in OTHER_GROUPS:
        names = benches_in(root, group)
        if not names:
            continue
        # tracing_cost: each subscriber against the run with no dispatcher ever set.
        base = median_ns(root, group, "none_never_set") if group == "tracing_cost" else None
        print()
        if base is None:
            print(f"| {group} | median |")
            print("|---|---:|")
        else:
            print(f"| {group} | median | vs none_never_set |")
            print("|---|---:|---:|")
        for name in names:
            ns = median_ns(root, group, name)
            row = [name, fmt_time(ns)]
            if base is not None:
                row.append(fmt_ratio(ns, base))
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
