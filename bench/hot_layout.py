#!/usr/bin/env python3
"""Writes the list of functions the sidecar proxy runs, for the release
binary's hot-text layout (crates/meshwork/build.rs).

Usage: hot_layout.py BINARY CALLGRIND_OUT... > crates/meshwork/layout/hot-functions.txt

Every function that ran in any of the callgrind profiles (made with
--demangle=no from BINARY) is listed twice, as linker-script globs:

1. exactly (only an LTO `.llvm.N` suffix becomes `*`): precise while the
   build's symbol hashes stay what they were (same dependencies, features,
   profile and compiler; `bench/run` builds that way);
2. with the parts that change from build to build replaced by `*` (the
   legacy-mangling hash `17h<16 hex>E`, a v0 crate disambiguator
   `Cs<base62>_`, ring's version prefix): survives any rebuild, but also
   matches the other instantiations of a generic function (legacy names
   do not spell the type arguments).

The linker places a section by the first line that matches it. Lines are
sorted by how much of what their pattern matches ran: densest first.
"""
import collections
import re
import subprocess
import sys


def executed(path):
    """Names of the functions with a cost in one callgrind output file."""
    names, seen = {}, set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                seen.add(m.group(1))
    return {names[i] for i in seen if i in names}


def exact(name):
    """The symbol itself, any LTO `.llvm.N` suffix a glob."""
    base = re.sub(r"\.llvm\.\d+$", "", name)
    return base + "*" if base != name or base.startswith("_ZN") else base


def pattern(name):
    """The build-independent form of a symbol name (a linker-script glob)."""
    name = re.sub(r"\.llvm\.\d+$", "", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
    name = re.sub(r"Cs[0-9A-Za-z]{1,16}_", "Cs*_", name)
    name = re.sub(r"^ring_core_\d+_\d+_\d+__", "ring_core_*__", name)
    return name


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = subprocess.run(["nm", "-S", sys.argv[1]], check=True, capture_output=True, text=True)
    sizes = collections.defaultdict(int)
    for line in out.stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW":
            sizes[p[3]] += int(p[1], 16)
    ran = set()
    for path in sys.argv[2:]:
        ran |= {n for n in executed(path) if n in sizes}
    ran_bytes, all_bytes = collections.defaultdict(int), collections.defaultdict(int)
    for n in ran:
        ran_bytes[pattern(n)] += sizes[n]
    for n, s in sizes.items():
        p = pattern(n)
        if p in ran_bytes:
            all_bytes[p] += s
    order = sorted(ran_bytes, key=lambda p: (-ran_bytes[p] / max(all_bytes[p], 1), p))
    rank = {p: i for i, p in enumerate(order)}
    exacts = sorted({exact(n) for n in ran}, key=lambda e: (rank[pattern(e.rstrip("*"))], e))
    print("# Functions the sidecar proxy runs (bench/hot-layout writes this file).")
    print(f"# {len(exacts)} exact names, then {len(order)} build-independent patterns;")
    print(f"# they ran {sum(ran_bytes.values())} bytes of code; the patterns match")
    print(f"# {sum(all_bytes.values())} bytes in the profiled binary. Densest first.")
    for line in exacts + order:
        if re.fullmatch(r"[A-Za-z0-9_.$*]+", line):
            print(line)


main()
