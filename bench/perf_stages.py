#!/usr/bin/env python3
"""Where a proxy's CPU per request goes, by stage, from a `perf record` of it under load.

Usage: perf_stages.py PERF_DATA CPU_US_PER_REQUEST [LABEL]
       perf_stages.py --compare LABEL=PERF_DATA:CPU_US ... [--diff LABEL_A,LABEL_B ...]
         one table, a column per profile, and a column per --diff with A's
         microseconds less B's, stage by stage

Reads `perf report --no-children --sort dso,sym` (self time of each function) and
sorts every sample into the stage its function belongs to, by module path: Portcullis's
own stages (canonicalise, route, guard, header work, access log, trace id, metrics),
the upstream client, hyper's HTTP/1 and h2 machinery, tokio, the allocator, the
kernel. Each stage's share of the samples times the measured CPU per request gives
its microseconds per request. Code the compiler inlined counts in the function it was
inlined into, so a stage's figure is a floor for it and a ceiling for its caller.
"""

import re
import subprocess
import sys

# First match wins: the more specific paths come first.
STAGES = [
    ("kernel", lambda dso, sym: dso.startswith("[kernel")),
    ("allocator (mimalloc, malloc)", lambda dso, sym: re.match(r"_?mi_|malloc|free|cfree|_int_", sym)),
    ("memcpy/memmove", lambda dso, sym: "memmove" in sym or "memcpy" in sym or "memset" in sym),
    ("canonicalise", lambda dso, sym: "portcullis::proxy::canonical" in sym),
    ("route", lambda dso, sym: re.search(r"portcullis::(compile::route|proxy::route|compile::RouteTable|route_table)", sym)),
    ("guard, session, identity headers", lambda dso, sym: re.search(r"portcullis::auth|handler::guard|cookie::|serde_json", sym)),
    ("SHA-256 (opened-session key)", lambda dso, sym: "sha256" in sym),
    ("header work", lambda dso, sym: "portcullis::proxy::headers" in sym),
    ("access log", lambda dso, sym: "portcullis::observe::access_log" in sym or "LoggedBody::write_log" in sym or "jiff" in sym),
    ("trace id", lambda dso, sym: "portcullis::observe::trace" in sym or "rand" in sym and "portcullis" not in sym),
    ("metrics", lambda dso, sym: "portcullis::observe::metrics" in sym or "prometheus" in sym),
    ("upstream client and pool", lambda dso, sym: re.search(r"hyper_util::client|portcullis::proxy::(clients|pool)|hyper::client|hyper_rustls", sym)),
    ("handler glue (request and response futures)", lambda dso, sym: "portcullis::" in sym),
    ("hyper: HTTP/1 parse and encode, dispatch", lambda dso, sym: re.search(r"hyper::|httparse|hyper_util", sym)),
    ("http types, header maps, bytes", lambda dso, sym: re.search(r"(^|[<\s])(http|bytes|http_body|http_body_util)::", sym)),
    ("h2", lambda dso, sym: re.search(r"(^|[<\s])h2::", sym)),
    ("tokio (scheduler, I/O driver, timers, channels)", lambda dso, sym: "tokio" in sym),
    ("vdso (clock reads)", lambda dso, sym: dso == "[vdso]"),
    ("libc, other", lambda dso, sym: True),
]

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$")


def samples(perf_data):
    out = subprocess.run(
        ["perf", "report", "-i", perf_data, "--no-children", "--sort", "dso,sym",
         "--stdio", "-g", "none", "--percent-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            yield float(m.group(1)), m.group(2), m.group(3).strip()


def stage_shares(perf_data):
    """Each stage's share of the samples (0..1), and the samples' entries."""
    shares = {name: 0.0 for name, _ in STAGES}
    top = []
    for pct, dso, sym in samples(perf_data):
        top.append((pct, dso, sym))
        for name, test in STAGES:
            if test(dso, sym):
                shares[name] += pct
                break
    total = sum(shares.values()) or 1.0
    return {name: share / total for name, share in shares.items()}, top


def compare(args):
    columns, diffs = [], []
    while args:
        arg = args.pop(0)
        if arg == "--diff":
            diffs.append(args.pop(0).split(",", 1))
            continue
        label, spec = arg.split("=", 1)
        perf_data, cpu_us = spec.rsplit(":", 1)
        shares, _ = stage_shares(perf_data)
        columns.append((label, float(cpu_us), {n: s * float(cpu_us) for n, s in shares.items()}))
    us = {label: per for label, _, per in columns}
    print("| stage | " + " | ".join(label for label, _, _ in columns)
          + "".join(f" | {a} - {b}" for a, b in diffs) + " |")
    print("|---" * (1 + len(columns) + len(diffs)) + "|")
    for name, _ in STAGES:
        if all(per[name] < 0.05 for _, _, per in columns):
            continue
        print(f"| {name} | " + " | ".join(f"{per[name]:.2f}" for _, _, per in columns)
              + "".join(f" | {us[a][name] - us[b][name]:+.2f}" for a, b in diffs) + " |")
    totals = {label: cpu for label, cpu, _ in columns}
    print("| **CPU per request** | " + " | ".join(f"**{cpu:.1f}**" for _, cpu, _ in columns)
          + "".join(f" | **{totals[a] - totals[b]:+.1f}**" for a, b in diffs) + " |")


def main():
    if sys.argv[1] == "--compare":
        return compare(sys.argv[2:])
    perf_data, cpu_us = sys.argv[1], float(sys.argv[2])
    label = sys.argv[3] if len(sys.argv) > 3 else perf_data
    fractions, top = stage_shares(perf_data)
    shares, total = {n: f * 100 for n, f in fractions.items()}, 100.0
    print(f"{label}: {cpu_us:.1f} us of CPU per request")
    print(f"| stage | share | us per request |")
    print(f"|---|---|---|")
    for name, _ in STAGES:
        if shares[name] >= 0.05:
            print(f"| {name} | {shares[name] / total * 100:.1f}% | {shares[name] / total * cpu_us:.2f} |")
    print(f"top entries:")
    for pct, dso, sym in sorted(top, reverse=True)[:15]:
        print(f"  {pct:5.2f}%  {dso:<14} {sym[:110]}")


if __name__ == "__main__":
    main()
