"""The compiled per-packet update of an elastic sketch (cffi, API mode), and its builder.

``python -m measure_model.sketch.elastic_c`` compiles :data:`SOURCE` into
``measure_model/sketch/_elastic_cffi*.so`` next to this file (in place, so a
checkout's tests and the installed package both find it; ``scripts/install.sh``
runs it). :func:`load` returns the compiled module, or None when it is not
built (the numpy path of :mod:`measure_model.sketch.elastic_update` then does
the same work, slower). Both apply the packets one by one in stream order, so
they give the same state bit for bit (tests check it).

Per packet (ElasticSketch's insert, lambda = 8): the key hashes to one
bucket of its table (IPv4 or IPv6, :mod:`measure_model.sketch.elastic_slots`);
it adds to its slot, takes the first free slot, or votes: ``vote- += w`` and,
when ``vote- > lambda * smallest``, the smallest entry's count goes to the
light part at its cells and the key takes its slot (flagged); otherwise the
packet goes to the light part. A light cell that would pass its maximum stays
at the maximum and the excess goes to the row's overflow word ``ov[row, i % ov_width]``,
so ``cell + ov`` never falls below the cell's true sum. An evicted key's
sketch key is recomputed from its lanes (keys.py's rules, :func:`hkey_of`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType

MODULE = "measure_model.sketch._elastic_cffi"
HERE = os.path.dirname(os.path.abspath(__file__))

STRUCTS = """
typedef struct {
    uint32_t *keys; void *count; uint8_t *flag; void *neg;
    uint64_t buckets; uint32_t slots; uint32_t lanes; uint32_t family; uint64_t salt;
} es_table;
typedef struct {
    void *cells; uint64_t *ov; uint64_t width; uint64_t ov_width; uint32_t depth;
    uint64_t salt; const uint64_t *mult; uint64_t cell_max;
} es_light;
"""

CDEF = STRUCTS + """
int es_update_pkt(uint64_t n, const uint64_t *hk, const uint32_t *lanes, uint32_t stride,
                  const int8_t *tab, const uint64_t *w, es_table *T, es_light *L,
                  uint64_t lambda_, uint64_t cmax, int kind);
int es_update_bytes(uint64_t n, const uint64_t *hk, const uint32_t *lanes, uint32_t stride,
                    const int8_t *tab, const uint64_t *w, es_table *T, es_light *L,
                    uint64_t lambda_, uint64_t cmax, int kind);
"""

SOURCE = r"""
#include <stdint.h>
#include <string.h>
""" + STRUCTS + r"""

static inline uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t reduce(uint64_t h, uint64_t n) { return ((h >> 32) * n) >> 32; }
static inline int key_eq(const uint32_t *a, const uint32_t *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) if (a[i] != b[i]) return 0;
    return 1;
}

/* kind: 0 value (ports, proto), 1 one address, 2 src_dst, 3 address + port, 4 five_tuple */
static uint64_t hkey_of(int kind, uint32_t family, const uint32_t *l) {
    if (kind == 0) return l[0];
    if (family == 4) {
        switch (kind) {
        case 1: return l[0];
        case 2: return ((uint64_t)l[0] << 32) | l[1];
        case 3: return ((uint64_t)l[0] << 16) | l[1];
        default: return mix64(mix64(((uint64_t)l[0] << 32) | l[1])
                              ^ (((uint64_t)l[3] << 32) | l[2]));
        }
    }
    uint64_t w[5];
    int n = 0, pos = 0, addrs = kind == 2 || kind == 4 ? 2 : 1;
    for (int a = 0; a < addrs; a++, pos += 4) {
        w[n++] = ((uint64_t)l[pos] << 32) | l[pos + 1];
        w[n++] = ((uint64_t)l[pos + 2] << 32) | l[pos + 3];
    }
    if (kind == 3) w[n++] = l[pos];
    if (kind == 4) w[n++] = ((uint64_t)l[pos + 1] << 32) | l[pos];
    uint64_t h = mix64(w[0]);
    for (int i = 1; i < n; i++) h = mix64(h ^ w[i]);
    return h;
}

#define LIGHT_ADD(NAME, CELL)                                                        \
static void NAME(es_light *L, uint64_t hk, uint64_t w) {                             \
    uint64_t h0 = mix64(hk ^ L->salt);                                               \
    CELL *cells = (CELL *)L->cells;                                                  \
    for (uint32_t r = 0; r < L->depth; r++) {                                        \
        uint64_t i = r * L->width + reduce(h0 * L->mult[r], L->width);               \
        uint64_t c = cells[i];                                                       \
        if (c + w <= L->cell_max) cells[i] = (CELL)(c + w);                          \
        else { L->ov[r * L->ov_width + (i - r * L->width) % L->ov_width]             \
                   += c + w - L->cell_max;                                           \
               cells[i] = (CELL)L->cell_max; }                                       \
    }                                                                                \
}

#define UPDATE(NAME, CT, LADD)                                                       \
int NAME(uint64_t n, const uint64_t *hk, const uint32_t *lanes, uint32_t stride,     \
         const int8_t *tab, const uint64_t *w, es_table *T, es_light *L,             \
         uint64_t lambda_, uint64_t cmax, int kind) {                                \
    int clamped = 0;                                                                 \
    for (uint64_t p = 0; p < n; p++) {                                               \
        int t = tab[p];                                                              \
        uint64_t wt = w[p];                                                          \
        if (t < 0) { LADD(L, hk[p], wt); continue; }                                 \
        es_table *tb = &T[t];                                                        \
        const uint32_t *key = lanes + p * stride;                                    \
        uint32_t nl = tb->lanes, S = tb->slots;                                      \
        uint64_t b = reduce(mix64(hk[p] ^ tb->salt), tb->buckets);                   \
        CT *cnt = (CT *)tb->count + b * S;                                           \
        uint32_t *keys = tb->keys + b * S * nl;                                      \
        uint8_t *flag = tb->flag + b * S;                                            \
        int match = -1, empty = -1;                                                  \
        for (uint32_t s = 0; s < S; s++) {                                           \
            if (cnt[s] == 0) { if (empty < 0) empty = (int)s; continue; }            \
            if (key_eq(keys + s * nl, key, nl)) { match = (int)s; break; }           \
        }                                                                            \
        if (match >= 0) {                                                            \
            uint64_t v = (uint64_t)cnt[match] + wt;                                  \
            if (v > cmax) { v = cmax; clamped = 1; }                                 \
            cnt[match] = (CT)v;                                                      \
            continue;                                                                \
        }                                                                            \
        if (wt > cmax) { wt = cmax; clamped = 1; }                                   \
        if (empty >= 0) {                                                            \
            memcpy(keys + empty * nl, key, 4 * nl);                                  \
            cnt[empty] = (CT)wt; flag[empty] = 0;                                    \
            continue;                                                                \
        }                                                                            \
        uint32_t mn = 0;                                                             \
        for (uint32_t s = 1; s < S; s++) if (cnt[s] < cnt[mn]) mn = s;               \
        CT *neg = (CT *)tb->neg + b;                                                 \
        uint64_t g = (uint64_t)*neg + wt;                                            \
        if (g > cmax) g = cmax;                                                      \
        if (g > lambda_ * (uint64_t)cnt[mn]) {                                       \
            LADD(L, hkey_of(kind, tb->family, keys + mn * nl), cnt[mn]);             \
            memcpy(keys + mn * nl, key, 4 * nl);                                     \
            cnt[mn] = (CT)wt; flag[mn] = 1; *neg = 0;                                \
        } else {                                                                     \
            *neg = (CT)g;                                                            \
            LADD(L, hk[p], wt);                                                      \
        }                                                                            \
    }                                                                                \
    return clamped;                                                                  \
}

LIGHT_ADD(light_add_u8, uint8_t)
LIGHT_ADD(light_add_u32, uint32_t)
UPDATE(es_update_pkt, uint32_t, light_add_u8)
UPDATE(es_update_bytes, uint64_t, light_add_u32)
"""


def build(tmpdir: str | None = None) -> str:
    """Compile the module in place (next to this file); returns the library's path."""
    import cffi  # type: ignore[import-untyped]

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, SOURCE, extra_compile_args=["-O3", "-march=native"])
    root = os.path.dirname(os.path.dirname(HERE))
    return ffi.compile(tmpdir=root, verbose=False)


def load() -> ModuleType | None:
    """The compiled module, or None when it is not built (or cannot load): the numpy
    path then runs, much slower, and the log says so once."""
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:
        logging.getLogger(__name__).warning(
            "compiled elastic update not available (%s): using the numpy path; build it "
            "with python -m measure_model.sketch.elastic_c or scripts/install.sh", exc)
        return None


if __name__ == "__main__":
    print(build())
    sys.exit(0)
