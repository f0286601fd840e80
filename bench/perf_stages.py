#!/usr/bin/env python3
"""Where a proxy's CPU per request goes, by stage, from a `perf record` of it under load.

Usage: perf_stages.py PERF_DATA CPU_US_PER_REQUEST [LABEL]

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
    ("guard, session, identity headers", lambda dso, sym: "portcullis::auth" in sym or "handler::guard" in sym),
    ("header work", lambda dso, sym: "portcullis::proxy::headers" in sym),
    ("access log", lambda dso, sym: "portcullis::observe::access_log" in sym or "jiff" in sym),
    ("trace id", lambda dso, sym: "portcullis::observe::trace" in sym or "rand" in sym and "portcullis" not in sym),
    ("metrics", lambda dso, sym: "portcullis::observe::metrics" in sym or "prometheus" in sym),
    ("upstream client and pool", lambda dso, sym: re.search(r"hyper_util::client|portcullis::proxy::clients|hyper::client|hyper_rustls", sym)),
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


def main():
    perf_data, cpu_us = sys.argv[1], float(sys.argv[2])
    label = sys.argv[3] if len(sys.argv) > 3 else perf_data
    shares = {name: 0.0 for name, _ in STAGES}
    top = []
    for pct, dso, sym in samples(perf_data):
        top.append((pct, dso, sym))
        for name, test in STAGES:
            if test(dso, sym):
                shares[name] += pct
                break
    total = sum(shares.values()) or 1.0
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
