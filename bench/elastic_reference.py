"""The reference ElasticSketch (BlockLiu/ElasticSketchCode, ``src/CPU/ElasticSketch``), run
on a bench trace: a small C++ driver built against a checkout given with ``--reference``.

The driver (:data:`DRIVER`) includes the reference's template sources as they
are, from a copy in which ``HeavyPart``'s buckets are made public (the
reference's own ``ElasticSketch.cpp`` reads them, so it does not compile
otherwise; nothing else is changed), builds
``ElasticSketch<BUCKET_NUM, TOT_MEM>`` with a quarter of the memory in the
heavy part as in its demo (64-byte buckets of 7 entries + the vote counter),
inserts every 4-byte key of the trace (CPU time), and prints per-flow estimates
of the queried keys, the heavy hitters, the flow size distribution (its EM),
the cardinality and the entropy. Built once per memory size with
``g++ -O2 -march=native`` into a cache directory keyed by the sources' hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

DRIVER = r"""
#include <algorithm>
#include <ctime>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>
#include "ElasticSketch.h"
#include "HeavyPart.cpp"
#include "LightPart.cpp"
#include "ElasticSketch.cpp"

#define BUCKET_NUM (TOT_MEM / 4 / 64)

static std::vector<uint32_t> read_keys(const char *path) {
    std::vector<uint32_t> out;
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    uint32_t buf[4096];
    size_t n;
    while ((n = fread(buf, 4, 4096, f)) > 0) out.insert(out.end(), buf, buf + n);
    fclose(f);
    return out;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: trace queries hh_threshold out\n"); return 2; }
    std::vector<uint32_t> trace = read_keys(argv[1]), queries = read_keys(argv[2]);
    int threshold = atoi(argv[3]);
    auto *es = new ElasticSketch<BUCKET_NUM, TOT_MEM>();
    std::clock_t t0 = std::clock();  /* CPU time, as ours: the machine is shared */
    for (uint32_t &k : trace) es->insert((uint8_t *)&k);
    double secs = double(std::clock() - t0) / CLOCKS_PER_SEC;
    FILE *out = fopen(argv[4], "w");
    fprintf(out, "speed %.1f\n", trace.size() / secs);
    fprintf(out, "cardinality %d\n", es->get_cardinality());
    fprintf(out, "entropy %.9f\n", es->get_entropy());
    std::vector<std::pair<std::string, int>> hh;
    es->get_heavy_hitters(threshold, hh);
    fprintf(out, "hh %zu\n", hh.size());
    for (auto &p : hh) {
        uint32_t k;
        memcpy(&k, p.first.data(), 4);
        fprintf(out, "%u %d\n", k, p.second);
    }
    std::vector<double> dist;
    es->get_distribution(dist);
    int sizes = 0;
    for (double d : dist) sizes += d > 0;
    fprintf(out, "dist %d\n", sizes);
    for (size_t i = 0; i < dist.size(); i++)
        if (dist[i] > 0) fprintf(out, "%zu %.6f\n", i, dist[i]);
    fprintf(out, "est %zu\n", queries.size());
    for (uint32_t &k : queries) fprintf(out, "%d\n", es->query((uint8_t *)&k));
    fclose(out);
    return 0;
}
"""


def source_dir(checkout: str) -> Path:
    """The reference's ``src/CPU/ElasticSketch`` in a checkout (ValueError if absent)."""
    d = Path(checkout) / "src" / "CPU" / "ElasticSketch"
    if not (d / "ElasticSketch.h").is_file():
        raise ValueError(f"--reference {checkout}: no src/CPU/ElasticSketch/ElasticSketch.h "
                         "(a checkout of BlockLiu/ElasticSketchCode is expected)")
    return d


def build(checkout: str, memory: int) -> str:
    """Path of the driver for ``memory`` bytes (built now if missing or changed)."""
    src = source_dir(checkout)
    digest = hashlib.sha256(DRIVER.encode())
    for name in sorted(os.listdir(src)):
        if name.endswith((".h", ".cpp")):
            digest.update((src / name).read_bytes())
    for name in ("BOBHash32.h", "BOBHash32.cpp", "EMFSD.h"):
        path = src.parent / "common" / name
        if path.is_file():
            digest.update(path.read_bytes())
    out_dir = Path(tempfile.gettempdir()) / f"endhost-measure-bench-{os.getuid()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / f"elastic-ref-{memory}-{digest.hexdigest()[:12]}"
    if not exe.exists():
        copy = out_dir / f"elastic-ref-src-{digest.hexdigest()[:12]}"
        if not copy.exists():
            tmp_copy = Path(f"{copy}.{os.getpid()}")
            shutil.copytree(src, tmp_copy / "ElasticSketch")
            shutil.copytree(src.parent / "common", tmp_copy / "common")
            heavy = tmp_copy / "ElasticSketch" / "HeavyPart.h"
            text = heavy.read_text()
            if "class HeavyPart\n{\n" not in text:
                raise ValueError("--reference: HeavyPart.h is not the expected version")
            heavy.write_text(text.replace("class HeavyPart\n{\n", "class HeavyPart\n{\npublic:\n",
                                          1))
            (tmp_copy / "driver.cpp").write_text(DRIVER)
            os.replace(tmp_copy, copy)
        tmp = f"{exe}.{os.getpid()}"
        subprocess.run(["g++", "-O2", "-std=c++14", "-march=native", f"-DTOT_MEM={memory}",
                        "-w", f"-I{copy / 'ElasticSketch'}", "-o", tmp,
                        str(copy / "driver.cpp"), str(copy / "common" / "BOBHash32.cpp")],
                       check=True, capture_output=True, text=True,
                       timeout=300)
        os.replace(tmp, exe)
    return str(exe)


def run(checkout: str, memory: int, trace: np.ndarray, queries: np.ndarray,
        threshold: int) -> dict:
    """The reference's answers on ``trace`` (uint32 keys): speed, cardinality, entropy,
    heavy hitters {key: size}, distribution {size: flows}, estimates of ``queries``."""
    exe = build(checkout, memory)
    with tempfile.TemporaryDirectory() as tmp:
        tpath, qpath, opath = (os.path.join(tmp, n) for n in ("trace", "queries", "out"))
        trace.astype("<u4").tofile(tpath)
        queries.astype("<u4").tofile(qpath)
        subprocess.run([exe, tpath, qpath, str(threshold), opath], check=True,
                       capture_output=True, text=True, timeout=1800)
        lines = Path(opath).read_text().split("\n")
    out: dict = {}
    i = 0
    while i < len(lines) and lines[i]:
        name, value = lines[i].split(" ", 1)
        i += 1
        if name in ("speed", "entropy"):
            out[name] = float(value)
        elif name == "cardinality":
            out[name] = int(value)
        elif name in ("hh", "dist"):
            n = int(value)
            pairs = [lines[j].split() for j in range(i, i + n)]
            i += n
            out[name] = ({int(k): int(v) for k, v in pairs} if name == "hh"
                         else {int(k): float(v) for k, v in pairs})
        elif name == "est":
            n = int(value)
            out["est"] = np.array(lines[i:i + n], dtype=np.int64)
            i += n
    return out
