/* HPACK (RFC 7541), written from the RFC: integers (§5.1), strings and the Huffman code
 * (§5.2, Appendix B), the static table (Appendix A), the dynamic table (§2.3.2, §4) and
 * the representations (§6). See hpack.h for the contracts. */
#include "proxy/hpack.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- Static table (Appendix A) ---------------------------------------------------- */

#define S(n, v)                                                                                    \
    {                                                                                              \
        n, v, sizeof(n) - 1, sizeof(v) - 1, 0                                                      \
    }
static const pt_hpack_field_t static_table[PT_HPACK_STATIC_COUNT + 1] = {
    S("", ""),
    S(":authority", ""),
    S(":method", "GET"),
    S(":method", "POST"),
    S(":path", "/"),
    S(":path", "/index.html"),
    S(":scheme", "http"),
    S(":scheme", "https"),
    S(":status", "200"),
    S(":status", "204"),
    S(":status", "206"),
    S(":status", "304"),
    S(":status", "400"),
    S(":status", "404"),
    S(":status", "500"),
    S("accept-charset", ""),
    S("accept-encoding", "gzip, deflate"),
    S("accept-language", ""),
    S("accept-ranges", ""),
    S("accept", ""),
    S("access-control-allow-origin", ""),
    S("age", ""),
    S("allow", ""),
    S("authorization", ""),
    S("cache-control", ""),
    S("content-disposition", ""),
    S("content-encoding", ""),
    S("content-language", ""),
    S("content-length", ""),
    S("content-location", ""),
    S("content-range", ""),
    S("content-type", ""),
    S("cookie", ""),
    S("date", ""),
    S("etag", ""),
    S("expect", ""),
    S("expires", ""),
    S("from", ""),
    S("host", ""),
    S("if-match", ""),
    S("if-modified-since", ""),
    S("if-none-match", ""),
    S("if-range", ""),
    S("if-unmodified-since", ""),
    S("last-modified", ""),
    S("link", ""),
    S("location", ""),
    S("max-forwards", ""),
    S("proxy-authenticate", ""),
    S("proxy-authorization", ""),
    S("range", ""),
    S("referer", ""),
    S("refresh", ""),
    S("retry-after", ""),
    S("server", ""),
    S("set-cookie", ""),
    S("strict-transport-security", ""),
    S("transfer-encoding", ""),
    S("user-agent", ""),
    S("vary", ""),
    S("via", ""),
    S("www-authenticate", ""),
};
#undef S

/* Static indexes the encoder treats specially (by name). */
enum {
    ST_PATH = 4,
    ST_AGE = 21,
    ST_AUTHORIZATION = 23,
    ST_CONTENT_LENGTH = 28,
    ST_COOKIE = 32,
    ST_ETAG = 34,
    ST_IF_MODIFIED_SINCE = 40,
    ST_IF_NONE_MATCH = 41,
    ST_LOCATION = 46,
    ST_PROXY_AUTHORIZATION = 49,
    ST_SET_COOKIE = 55,
};

/* Name lookup without a scan: an open-addressing table of 128 slots over the 52 distinct
 * names, keyed by a hash of the length and three bytes (no loop over the name), holding
 * the first static index with that name (entries with one name are consecutive). */
#define NAME_SLOTS 128
static uint8_t name_slot[NAME_SLOTS];
static uint8_t name_run_end[PT_HPACK_STATIC_COUNT + 1]; /* last index with the same name */

static inline unsigned name_hash(const char *n, size_t len)
{
    unsigned h = (unsigned)len * 31u;
    if (len > 0) {
        h = (h ^ (unsigned char)n[0]) * 33u;
        h = (h ^ (unsigned char)n[len / 2]) * 33u;
        h = (h ^ (unsigned char)n[len - 1]) * 33u;
    }
    return (h ^ (h >> 7)) & (NAME_SLOTS - 1);
}

/* ---- Huffman code (§5.2, Appendix B) ----------------------------------------------- */

/* Appendix B's code is canonical (its text says so, citing [CANONICAL]): the code of each
 * symbol follows from the code lengths alone, given in the appendix's "len in bits"
 * column, symbols 0..255 then EOS (256). The codes are computed from them at start-up;
 * test_hpack.c checks a sample against the appendix's "code as hex" column. */
static const uint8_t huff_len[257] = {
    /*   0 */ 13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    /*  16 */ 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    /*  32 */ 6,  10, 10, 12, 13, 6,  8,  11, 10, 10, 8,  11, 8,  6,  6,  6,
    /*  48 */ 5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8,  15, 6,  12, 10,
    /*  64 */ 13, 6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,
    /*  80 */ 7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8,  13, 19, 13, 14, 6,
    /*  96 */ 15, 5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,
    /* 112 */ 6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7,  15, 11, 14, 13, 28,
    /* 128 */ 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    /* 144 */ 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    /* 160 */ 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    /* 176 */ 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    /* 192 */ 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    /* 208 */ 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    /* 224 */ 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    /* 240 */ 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    /* 256 */ 30,
};

#define HUFF_EOS     256
#define HUFF_MAX_LEN 30

static uint32_t huff_code[257]; /* right-aligned */

/* Decoding, one symbol per step: the next 8 bits index fast[] for the 74 symbols of 5 to 8
 * bits (most of what headers hold); the rest, all of which start with 0xfe or 0xff, are
 * found by the canonical rule: the code of length l is the one whose first l bits, as a
 * number c, fall in [first[l], first[l] + count[l]); its symbol is sorted[base[l] + c -
 * first[l]], sorted[] listing the symbols by (length, symbol). */
typedef struct huff_fast {
    uint8_t sym;
    uint8_t len; /* 0: a longer code */
} huff_fast_t;
static huff_fast_t huff_fast[256];
static uint32_t huff_first[HUFF_MAX_LEN + 1];
static uint16_t huff_count[HUFF_MAX_LEN + 1];
static uint16_t huff_base[HUFF_MAX_LEN + 1];
static uint16_t huff_sorted[257];

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void hpack_init_once(void)
{
    /* Canonical codes: by increasing length, then symbol, each code is the previous one
     * plus one, shifted left by the growth in length. */
    uint32_t n = 0;
    for (unsigned len = 1; len <= HUFF_MAX_LEN; len++) {
        huff_base[len] = (uint16_t)n;
        for (unsigned s = 0; s < 257; s++)
            if (huff_len[s] == len)
                huff_sorted[n++] = (uint16_t)s;
        huff_count[len] = (uint16_t)(n - huff_base[len]);
    }
    uint32_t code = 0;
    unsigned prev_len = huff_len[huff_sorted[0]];
    for (unsigned i = 0; i < 257; i++) {
        unsigned s = huff_sorted[i], len = huff_len[s];
        if (i > 0)
            code = (code + 1) << (len - prev_len);
        if (huff_count[len] && huff_base[len] == i)
            huff_first[len] = code;
        huff_code[s] = code;
        prev_len = len;
    }
    for (unsigned s = 0; s < 257; s++) {
        unsigned len = huff_len[s];
        if (len > 8)
            continue;
        unsigned lo = huff_code[s] << (8 - len), span = 1u << (8 - len);
        for (unsigned i = 0; i < span; i++)
            huff_fast[lo + i] = (huff_fast_t){(uint8_t)s, (uint8_t)len};
    }
    for (unsigned i = PT_HPACK_STATIC_COUNT; i >= 1; i--)
        name_run_end[i] =
            i < PT_HPACK_STATIC_COUNT && strcmp(static_table[i].name, static_table[i + 1].name) == 0
                ? name_run_end[i + 1]
                : (uint8_t)i;
    for (unsigned i = 1; i <= PT_HPACK_STATIC_COUNT; i++) {
        const pt_hpack_field_t *f = &static_table[i];
        if (static_table[i - 1].name_len == f->name_len &&
            memcmp(static_table[i - 1].name, f->name, f->name_len) == 0)
            continue;
        unsigned h = name_hash(f->name, f->name_len);
        while (name_slot[h] != 0)
            h = (h + 1) & (NAME_SLOTS - 1);
        name_slot[h] = (uint8_t)i;
    }
}

static inline void hpack_init(void)
{
    pthread_once(&init_once, hpack_init_once);
}

static inline size_t huff_encoded_len(const uint8_t *s, size_t n)
{
    uint64_t bits = 0;
    for (size_t i = 0; i < n; i++)
        bits += huff_len[s[i]];
    return (size_t)((bits + 7) / 8);
}

static inline size_t huff_encode(const uint8_t *s, size_t n, uint8_t *out)
{
    uint8_t *p = out;
    uint64_t acc = 0; /* right-aligned pending bits */
    unsigned nbits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned len = huff_len[s[i]];
        acc = (acc << len) | huff_code[s[i]];
        nbits += len;
        while (nbits >= 8) {
            nbits -= 8;
            *p++ = (uint8_t)(acc >> nbits);
        }
    }
    if (nbits > 0) /* pad with the most significant bits of EOS: ones (§5.2) */
        *p++ = (uint8_t)((acc << (8 - nbits)) | (0xffu >> nbits));
    return (size_t)(p - out);
}

static long huff_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    const uint8_t *p = in, *end = in + n;
    uint64_t acc = 0; /* left-aligned: the next bit is bit 63; unused low bits are 0 */
    unsigned nbits = 0;
    size_t o = 0;
    for (;;) {
        /* Refill only when the longest code might not fit: most steps skip this. */
        if (nbits < HUFF_MAX_LEN) {
            while (nbits <= 56 && p < end) {
                acc |= (uint64_t)*p++ << (56 - nbits);
                nbits += 8;
            }
            if (nbits == 0)
                break;
        }
        huff_fast_t f = huff_fast[acc >> 56];
        if (f.len != 0 && f.len <= nbits) { /* a short code: never EOS */
            if (o == cap)
                return PT_HPACK_E_STRING_TOO_LONG;
            out[o++] = f.sym;
            acc <<= f.len;
            nbits -= f.len;
            continue;
        }
        unsigned sym = 0, len = 0;
        if (f.len == 0) {
            for (unsigned l = 9; l <= HUFF_MAX_LEN && l <= nbits; l++) {
                uint32_t c = (uint32_t)(acc >> (64 - l));
                if (c - huff_first[l] < huff_count[l]) {
                    sym = huff_sorted[huff_base[l] + (c - huff_first[l])];
                    len = l;
                    break;
                }
            }
        }
        if (len == 0) {
            /* What is left is no whole code, so it must be padding: fewer than 8 bits,
             * all of them ones (the start of EOS). The input is all read here: refills
             * keep at least 30 bits while any remains. */
            if (nbits > 7 || (acc >> (64 - nbits)) != (1u << nbits) - 1)
                return PT_HPACK_E_HUFFMAN;
            break;
        }
        if (sym == HUFF_EOS)
            return PT_HPACK_E_HUFFMAN;
        if (o == cap)
            return PT_HPACK_E_STRING_TOO_LONG;
        out[o++] = (uint8_t)sym;
        acc <<= len;
        nbits -= len;
    }
    return (long)o;
}

/* The public entry points make sure the tables exist; the codec's own paths, reached only
 * through a decoder or encoder, whose init made them, skip that. */
size_t pt_hpack_huffman_encoded_len(const uint8_t *s, size_t n)
{
    hpack_init();
    return huff_encoded_len(s, n);
}

size_t pt_hpack_huffman_encode(const uint8_t *s, size_t n, uint8_t *out)
{
    hpack_init();
    return huff_encode(s, n, out);
}

long pt_hpack_huffman_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    hpack_init();
    return huff_decode(in, n, out, cap);
}

/* ---- Static table lookups ----------------------------------------------------------- */

const pt_hpack_field_t *pt_hpack_static_entry(uint32_t index)
{
    return index >= 1 && index <= PT_HPACK_STATIC_COUNT ? &static_table[index] : NULL;
}

static inline uint32_t static_find(const char *name, size_t name_len, const char *value,
                                   size_t value_len, uint32_t *exact)
{
    *exact = 0;
    unsigned h = name_hash(name, name_len);
    for (;;) {
        unsigned i = name_slot[h];
        if (i == 0)
            return 0;
        const pt_hpack_field_t *f = &static_table[i];
        if (f->name_len == name_len && memcmp(f->name, name, name_len) == 0) {
            for (unsigned j = i; j <= name_run_end[i]; j++) {
                const pt_hpack_field_t *g = &static_table[j];
                if (g->value_len == value_len && memcmp(g->value, value, value_len) == 0) {
                    *exact = j;
                    break;
                }
            }
            return i;
        }
        h = (h + 1) & (NAME_SLOTS - 1);
    }
}

uint32_t pt_hpack_static_find(const char *name, size_t name_len, const char *value,
                              size_t value_len, uint32_t *exact)
{
    hpack_init();
    return static_find(name, name_len, value, value_len, exact);
}

/* ---- Dynamic table (§2.3.2, §4) ----------------------------------------------------- */

/* The encoder's hash chains: exact (name and value) keys, then name keys. */
#define EXACT_BUCKETS 64
#define NAME_BUCKETS  32

static void table_init(pt_hpack_table_t *t, uint32_t max_size, int indexed)
{
    memset(t, 0, sizeof(*t));
    t->max_size = max_size;
    t->indexed = (uint8_t)indexed;
}

static void table_dispose(pt_hpack_table_t *t)
{
    free(t->ent); /* and the links and buckets, in the same block */
    t->ent = NULL;
    t->link = NULL;
    t->bucket = NULL;
    free(t->bytes);
    t->bytes = NULL;
}

static inline pt_hpack_entry_t *table_at(const pt_hpack_table_t *t, uint32_t index)
{
    return &t->ent[(t->first + t->count - index) & (t->ent_cap - 1)];
}

int pt_hpack_table_get(const pt_hpack_table_t *t, uint32_t index, pt_hpack_field_t *out)
{
    if (index < 1 || index > t->count)
        return PT_HPACK_E_INDEX;
    const pt_hpack_entry_t *e = table_at(t, index);
    out->name = t->bytes + e->off;
    out->name_len = e->name_len;
    out->value = t->bytes + e->off + e->name_len;
    out->value_len = e->value_len;
    out->flags = 0;
    return 0;
}

/* The bytes an entry occupies: its strings, and at least one byte, so that every entry
 * has its own place in the area (an empty entry at the very end would otherwise sit at
 * the wrap point, neither before nor after it). */
static inline uint32_t entry_span(const pt_hpack_entry_t *e)
{
    uint32_t n = e->name_len + e->value_len;
    return n ? n : 1;
}

static void table_evict_oldest(pt_hpack_table_t *t)
{
    pt_hpack_entry_t *e = &t->ent[t->first];
    if (t->bucket != NULL) {
        /* Chains run newest to oldest, so one whose head goes is gone entirely; a chain
         * that continues into evicted entries is cut where it is walked (enc_live). */
        uint32_t tag = t->inserted - t->count + 1; /* the oldest's number + 1 */
        const pt_hpack_link_t *l = &t->link[t->first];
        if (t->bucket[l->exact_key % EXACT_BUCKETS] == tag)
            t->bucket[l->exact_key % EXACT_BUCKETS] = 0;
        if (t->bucket[EXACT_BUCKETS + l->name_key % NAME_BUCKETS] == tag)
            t->bucket[EXACT_BUCKETS + l->name_key % NAME_BUCKETS] = 0;
    }
    t->size -= 32 + e->name_len + e->value_len;
    t->first = (t->first + 1) & (t->ent_cap - 1);
    t->count--;
    t->head = e->off + entry_span(e);
    if (t->count == 0) {
        t->head = t->tail = t->wrap = 0;
    } else if (t->wrap != 0 && t->head == t->wrap) {
        /* The oldest entries before the wrap are gone: the next one is at offset 0. */
        t->head = 0;
        t->wrap = 0;
    }
}

static void table_set_max(pt_hpack_table_t *t, uint32_t max_size)
{
    t->max_size = max_size;
    while (t->size > max_size)
        table_evict_oldest(t);
}

/* Where len bytes of strings can go, contiguously, or -1. Not wrapped (wrap == 0), the
 * strings occupy [head, tail): room after tail, else before head (then wrap = tail).
 * Wrapped, they occupy [head, wrap) and [0, tail): room between tail and head. */
static long table_place(pt_hpack_table_t *t, uint32_t len)
{
    if (t->bytes == NULL) /* no area yet, even for empty strings: views need a base */
        return -1;
    if (t->count == 0)
        t->head = t->tail = t->wrap = 0;
    if (t->wrap == 0) {
        if (t->bytes_cap - t->tail >= len)
            return t->tail;
        if (t->head >= len && t->count > 0) {
            t->wrap = t->tail;
            return 0;
        }
        return -1;
    }
    return t->head - t->tail >= len ? (long)t->tail : -1;
}

/* More room for strings (a larger area, the live entries copied to its start in order), or
 * for entry metadata. The area never needs to pass twice the maximum size: with live
 * strings L and a new entry N, L + N <= max, one of the free spans holds N. */
static int table_grow_bytes(pt_hpack_table_t *t, uint32_t len)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        const pt_hpack_entry_t *e = &t->ent[(t->first + i) & (t->ent_cap - 1)];
        live += entry_span(e);
    }
    uint64_t cap = t->bytes_cap ? (uint64_t)t->bytes_cap * 2 : 256;
    while (cap < (uint64_t)live + len)
        cap *= 2;
    if (cap > UINT32_MAX)
        return PT_HPACK_E_NOMEM;
    char *nb = malloc((size_t)cap);
    if (nb == NULL)
        return PT_HPACK_E_NOMEM;
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->count; i++) {
        pt_hpack_entry_t *e = &t->ent[(t->first + i) & (t->ent_cap - 1)];
        memcpy(nb + off, t->bytes + e->off, e->name_len + e->value_len);
        e->off = off;
        off += entry_span(e);
    }
    free(t->bytes);
    t->bytes = nb;
    t->bytes_cap = (uint32_t)cap;
    t->head = 0;
    t->tail = off;
    t->wrap = 0;
    return 0;
}

/* A larger ring (and links), each entry moved to the slot its insertion number gives. One
 * allocation holds the entries, then for an encoder the links and the chain heads. */
static int table_grow_entries(pt_hpack_table_t *t)
{
    uint32_t cap = t->ent_cap ? t->ent_cap * 2 : 8;
    size_t size = cap * sizeof(pt_hpack_entry_t);
    if (t->indexed)
        size += cap * sizeof(pt_hpack_link_t) + (EXACT_BUCKETS + NAME_BUCKETS) * sizeof(uint32_t);
    pt_hpack_entry_t *ne = malloc(size);
    if (ne == NULL)
        return PT_HPACK_E_NOMEM;
    pt_hpack_link_t *nl = t->indexed ? (pt_hpack_link_t *)(ne + cap) : NULL;
    uint32_t *nb = t->indexed ? (uint32_t *)(nl + cap) : NULL;
    if (nb != NULL) {
        if (t->bucket != NULL)
            memcpy(nb, t->bucket, (EXACT_BUCKETS + NAME_BUCKETS) * sizeof(uint32_t));
        else
            memset(nb, 0, (EXACT_BUCKETS + NAME_BUCKETS) * sizeof(uint32_t));
    }
    uint32_t oldest = t->inserted - t->count;
    for (uint32_t i = 0; i < t->count; i++) {
        uint32_t from = (t->first + i) & (t->ent_cap - 1), to = (oldest + i) & (cap - 1);
        ne[to] = t->ent[from];
        if (nl != NULL)
            nl[to] = t->link[from];
    }
    free(t->ent);
    t->ent = ne;
    t->link = nl;
    t->bucket = nb;
    t->ent_cap = cap;
    t->first = oldest & (cap - 1);
    return 0;
}

/* §4.4: evict until the new entry fits, then add it; an entry larger than the maximum
 * size empties the table and is not added (not an error). name and value must not point
 * into the table itself (eviction or growth could move them). */
static int table_insert(pt_hpack_table_t *t, const char *name, uint32_t name_len, const char *value,
                        uint32_t value_len, uint32_t name_key, uint32_t exact_key)
{
    uint64_t esize = 32ull + name_len + value_len;
    if (esize > t->max_size) {
        while (t->count > 0)
            table_evict_oldest(t);
        return 0;
    }
    while (t->size + esize > t->max_size)
        table_evict_oldest(t);
    uint32_t len = name_len + value_len;
    uint32_t span = len ? len : 1; /* entry_span() */
    long off = table_place(t, span);
    if (off < 0) {
        int rc = table_grow_bytes(t, span);
        if (rc < 0)
            return rc;
        off = table_place(t, span);
    }
    if (t->count == t->ent_cap) {
        int rc = table_grow_entries(t);
        if (rc < 0)
            return rc;
    }
    if (len > 0) {
        memcpy(t->bytes + off, name, name_len);
        memcpy(t->bytes + off + name_len, value, value_len);
    }
    t->tail = (uint32_t)off + span;
    uint32_t slot = (t->first + t->count) & (t->ent_cap - 1); /* = inserted & mask */
    pt_hpack_entry_t *e = &t->ent[slot];
    e->off = (uint32_t)off;
    e->name_len = name_len;
    e->value_len = value_len;
    if (t->indexed) {
        pt_hpack_link_t *l = &t->link[slot];
        uint32_t *xb = &t->bucket[exact_key % EXACT_BUCKETS];
        uint32_t *nb = &t->bucket[EXACT_BUCKETS + name_key % NAME_BUCKETS];
        l->name_key = name_key;
        l->exact_key = exact_key;
        l->next_exact = *xb;
        l->next_name = *nb;
        *xb = *nb = t->inserted + 1;
    }
    t->inserted++;
    t->count++;
    t->size += (uint32_t)esize;
    return 0;
}

/* ---- Decoder (§3, §6) --------------------------------------------------------------- */

void pt_hpack_decoder_init(pt_hpack_decoder_t *d, uint32_t settings_max, uint32_t max_string)
{
    hpack_init();
    table_init(&d->table, settings_max, 0);
    d->settings_max = settings_max;
    d->max_string = max_string;
    d->need_update = 0;
}

void pt_hpack_decoder_dispose(pt_hpack_decoder_t *d)
{
    table_dispose(&d->table);
}

void pt_hpack_decoder_set_settings_max(pt_hpack_decoder_t *d, uint32_t settings_max)
{
    d->settings_max = settings_max;
    d->need_update = settings_max < d->table.max_size;
}

/* §5.1, with *p at the first octet (which exists). Values past 2^32-1, or needing more
 * than five continuation octets (zero padding included), are refused. */
static inline int dec_int(const uint8_t **pp, const uint8_t *end, unsigned prefix, uint32_t *out)
{
    const uint8_t *p = *pp;
    uint32_t max = (1u << prefix) - 1;
    uint32_t v = *p++ & max;
    if (v < max) {
        *out = v;
        *pp = p;
        return 0;
    }
    uint64_t acc = v;
    for (unsigned shift = 0;; shift += 7) {
        if (shift > 28)
            return PT_HPACK_E_INTEGER;
        if (p == end)
            return PT_HPACK_E_TRUNCATED;
        uint8_t b = *p++;
        acc += (uint64_t)(b & 0x7f) << shift;
        if (acc > UINT32_MAX)
            return PT_HPACK_E_INTEGER;
        if (!(b & 0x80))
            break;
    }
    *out = (uint32_t)acc;
    *pp = p;
    return 0;
}

typedef struct dec_ctx {
    pt_hpack_decoder_t *d;
    const uint8_t *p, *end;
    uint8_t *scratch;
    size_t scratch_len, scratch_cap;
} dec_ctx_t;

/* §5.2: a raw string is a view into the block; a Huffman one is decoded into scratch. */
static int dec_str(dec_ctx_t *c, const char **s, uint32_t *len, int *stable)
{
    if (c->p == c->end)
        return PT_HPACK_E_TRUNCATED;
    int huff = *c->p & 0x80;
    uint32_t n;
    int rc = dec_int(&c->p, c->end, 7, &n);
    if (rc < 0)
        return rc;
    if (n > (size_t)(c->end - c->p))
        return PT_HPACK_E_TRUNCATED;
    if (!huff) {
        if (n > c->d->max_string)
            return PT_HPACK_E_STRING_TOO_LONG;
        *s = (const char *)c->p;
        *len = n;
        *stable = 1;
        c->p += n;
        return 0;
    }
    size_t room = c->scratch_cap - c->scratch_len;
    if (room > c->d->max_string)
        room = c->d->max_string;
    long got = huff_decode(c->p, n, c->scratch + c->scratch_len, room);
    if (got < 0)
        return (int)got;
    *s = (const char *)c->scratch + c->scratch_len;
    *len = (uint32_t)got;
    *stable = 0;
    c->scratch_len += (size_t)got;
    c->p += n;
    return 0;
}

/* Index (1-based) into the static then the dynamic table. */
static int dec_lookup(const pt_hpack_decoder_t *d, uint32_t index, pt_hpack_field_t *f,
                      int *is_static)
{
    if (index == 0)
        return PT_HPACK_E_INDEX;
    if (index <= PT_HPACK_STATIC_COUNT) {
        *f = static_table[index];
        *is_static = 1;
        return 0;
    }
    *is_static = 0;
    return pt_hpack_table_get(&d->table, index - PT_HPACK_STATIC_COUNT, f);
}

int pt_hpack_decode(pt_hpack_decoder_t *d, const uint8_t *in, size_t len, size_t max_list_size,
                    uint8_t *scratch, size_t scratch_cap, pt_hpack_field_cb cb, void *data)
{
    dec_ctx_t c = {d, in, in + len, scratch, 0, scratch_cap};
    size_t list_size = 0;
    int over = 0, seen_field = 0;
    while (c.p < c.end) {
        uint8_t b = *c.p;
        uint32_t index;
        int rc;
        pt_hpack_field_t f;
        if ((b & 0xe0) == 0x20) {
            /* §6.3: only before the first field of a block (§4.2). */
            if (seen_field)
                return PT_HPACK_E_TABLE_SIZE;
            if ((rc = dec_int(&c.p, c.end, 5, &index)) < 0)
                return rc;
            if (index > d->settings_max)
                return PT_HPACK_E_TABLE_SIZE;
            table_set_max(&d->table, index);
            d->need_update = 0;
            continue;
        }
        if (d->need_update)
            return PT_HPACK_E_TABLE_SIZE;
        seen_field = 1;
        c.scratch_len = 0;
        if (b & 0x80) { /* §6.1 indexed */
            int is_static;
            if ((rc = dec_int(&c.p, c.end, 7, &index)) < 0)
                return rc;
            if ((rc = dec_lookup(d, index, &f, &is_static)) < 0)
                return rc;
            f.flags = is_static ? PT_HPACK_F_NAME_STABLE | PT_HPACK_F_VALUE_STABLE : 0;
        } else {
            /* §6.2: with incremental indexing (01), without (0000), never (0001). */
            int indexing = (b & 0x40) != 0;
            unsigned prefix = indexing ? 6 : 4;
            int stable;
            f.flags = indexing ? 0 : (b & 0x10) ? PT_HPACK_F_NEVER_INDEX : PT_HPACK_F_NO_INDEX;
            if ((rc = dec_int(&c.p, c.end, prefix, &index)) < 0)
                return rc;
            if (index != 0) {
                pt_hpack_field_t nf;
                int is_static;
                if ((rc = dec_lookup(d, index, &nf, &is_static)) < 0)
                    return rc;
                f.name = nf.name;
                f.name_len = nf.name_len;
                if (is_static) {
                    f.flags |= PT_HPACK_F_NAME_STABLE;
                } else if (indexing) {
                    /* The insertion below may evict this very entry (§4.4): copy the
                     * name out of the table first. */
                    if (nf.name_len > c.scratch_cap)
                        return PT_HPACK_E_STRING_TOO_LONG;
                    memcpy(c.scratch, nf.name, nf.name_len);
                    f.name = (const char *)c.scratch;
                    c.scratch_len = nf.name_len;
                }
            } else {
                if ((rc = dec_str(&c, &f.name, &f.name_len, &stable)) < 0)
                    return rc;
                if (stable)
                    f.flags |= PT_HPACK_F_NAME_STABLE;
            }
            if ((rc = dec_str(&c, &f.value, &f.value_len, &stable)) < 0)
                return rc;
            if (stable)
                f.flags |= PT_HPACK_F_VALUE_STABLE;
            if (indexing &&
                (rc = table_insert(&d->table, f.name, f.name_len, f.value, f.value_len, 0, 0)) < 0)
                return rc;
        }
        /* The list is counted as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2).
         * Past the limit, fields are dropped but decoding goes on: the table stays in step. */
        list_size += 32 + (size_t)f.name_len + f.value_len;
        if (list_size > max_list_size)
            over = 1;
        if (!over && (rc = cb(data, &f)) < 0)
            return rc;
    }
    return over ? PT_HPACK_E_LIST_SIZE : 0;
}

typedef struct list_ctx {
    pt_hpack_list_t *list;
    int full;
} list_ctx_t;

static int list_copy(pt_hpack_list_t *l, const char **s, uint32_t len)
{
    if (l->buf_cap - l->buf_len < len)
        return -1;
    if (len > 0)
        memcpy(l->buf + l->buf_len, *s, len);
    *s = l->buf + l->buf_len;
    l->buf_len += len;
    return 0;
}

static int list_add(void *data, const pt_hpack_field_t *f)
{
    list_ctx_t *c = data;
    pt_hpack_list_t *l = c->list;
    if (c->full || l->count == l->cap) {
        c->full = 1;
        return 0;
    }
    pt_hpack_field_t g = *f;
    size_t mark = l->buf_len;
    if ((!(g.flags & PT_HPACK_F_NAME_STABLE) && list_copy(l, &g.name, g.name_len) < 0) ||
        (!(g.flags & PT_HPACK_F_VALUE_STABLE) && list_copy(l, &g.value, g.value_len) < 0)) {
        l->buf_len = mark;
        c->full = 1;
        return 0;
    }
    g.flags |= PT_HPACK_F_NAME_STABLE | PT_HPACK_F_VALUE_STABLE;
    l->fields[l->count++] = g;
    return 0;
}

int pt_hpack_decode_list(pt_hpack_decoder_t *d, const uint8_t *in, size_t len, size_t max_list_size,
                         uint8_t *scratch, size_t scratch_cap, pt_hpack_list_t *list)
{
    list_ctx_t c = {list, 0};
    list->count = 0;
    list->buf_len = 0;
    int rc = pt_hpack_decode(d, in, len, max_list_size, scratch, scratch_cap, list_add, &c);
    if (rc == 0 && c.full)
        rc = PT_HPACK_E_LIST_SIZE;
    return rc;
}

/* ---- Encoder (§6, §7.1) ------------------------------------------------------------- */

void pt_hpack_encoder_init(pt_hpack_encoder_t *e, uint32_t local_max, unsigned flags)
{
    hpack_init();
    uint32_t max =
        local_max < PT_HPACK_DEFAULT_TABLE_SIZE ? local_max : PT_HPACK_DEFAULT_TABLE_SIZE;
    table_init(&e->table, max, 1);
    e->local_max = local_max;
    /* The peer's decoder starts at 4096 (RFC 9113 §6.5.2): a smaller table must be said. */
    e->update_pending = max < PT_HPACK_DEFAULT_TABLE_SIZE;
    e->min_pending = max;
    e->huffman = !(flags & PT_HPACK_ENC_NO_HUFFMAN);
    e->index_volatile = (flags & PT_HPACK_ENC_INDEX_ALL) != 0;
}

void pt_hpack_encoder_dispose(pt_hpack_encoder_t *e)
{
    table_dispose(&e->table);
}

void pt_hpack_encoder_set_peer_max(pt_hpack_encoder_t *e, uint32_t peer_max)
{
    uint32_t max = peer_max < e->local_max ? peer_max : e->local_max;
    if (max == e->table.max_size)
        return;
    /* §4.2: if the size went down and up again before the next block, the smallest value
     * is signalled first, then the final one. */
    if (!e->update_pending || max < e->min_pending)
        e->min_pending = max;
    e->update_pending = 1;
    table_set_max(&e->table, max);
}

size_t pt_hpack_encode_bound(const pt_hpack_field_t *fields, size_t n)
{
    /* Two size updates (1 + 5 octets each); per field one representation octet with up to
     * 5 more of index, then two strings, each with up to 5 octets of length + 1. */
    size_t bound = 12;
    for (size_t i = 0; i < n; i++)
        bound += 18 + (size_t)fields[i].name_len + fields[i].value_len;
    return bound;
}

static inline uint8_t *enc_int(uint8_t *p, uint8_t first, unsigned prefix, uint32_t v)
{
    uint32_t max = (1u << prefix) - 1;
    if (v < max) {
        *p++ = (uint8_t)(first | v);
        return p;
    }
    *p++ = (uint8_t)(first | max);
    v -= max;
    while (v >= 128) {
        *p++ = (uint8_t)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* §5.2: Huffman when it is not longer (as the RFC's own examples choose, C.6.2 "307"). */
static uint8_t *enc_str(const pt_hpack_encoder_t *e, uint8_t *p, const char *s, uint32_t len)
{
    if (e->huffman) {
        size_t hl = huff_encoded_len((const uint8_t *)s, len);
        if (hl <= len) {
            p = enc_int(p, 0x80, 7, (uint32_t)hl);
            return p + huff_encode((const uint8_t *)s, len, p);
        }
    }
    p = enc_int(p, 0, 7, len);
    if (len > 0)
        memcpy(p, s, len);
    return p + len;
}

/* The key an entry's name is filed under: its static index when the static table has the
 * name (most do, and then no hashing at all), else a cheap hash of it. Keys only pick a
 * chain and skip most compares. */
static inline uint32_t enc_name_key(const char *s, uint32_t len, uint32_t sname)
{
    if (sname)
        return sname;
    uint32_t h = len * 0x9e3779b1u;
    if (len > 0)
        h ^= ((uint32_t)(unsigned char)s[0] << 8 | (unsigned char)s[len - 1]) * 0x85ebca6bu ^
             (unsigned char)s[len / 2];
    return h | 0x80000000u;
}

/* Up to 8 bytes from s, little-endian, zero-padded. */
static inline uint64_t load_upto8(const char *s, uint32_t n)
{
    uint64_t v = 0;
    if (n >= 8) {
        memcpy(&v, s, 8);
        return v;
    }
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)(unsigned char)s[i] << (8 * i);
    return v;
}

/* The key of a name and value: the name key and every byte of the value, 8 at a time
 * (values that differ anywhere, as request ids do, get different keys). */
static inline uint32_t enc_exact_key(uint32_t name_key, const char *v, uint32_t len)
{
    uint64_t h = ((uint64_t)name_key << 32 | len) * 0x9e3779b97f4a7c15ull;
    uint32_t i = 0;
    for (; i + 8 <= len; i += 8) {
        h ^= load_upto8(v + i, 8) * 0xc2b2ae3d27d4eb4full;
        h = (h << 31 | h >> 33) * 0x165667b19e3779f9ull;
    }
    h ^= load_upto8(v + i, len - i) * 0xc2b2ae3d27d4eb4full;
    h ^= h >> 29;
    return (uint32_t)(h ^ (h >> 32));
}

/* The dynamic index (1 = newest) of entry number tag - 1, or 0 when it was evicted (or tag
 * is 0: the end of a chain). */
static inline uint32_t enc_live(const pt_hpack_table_t *t, uint32_t tag)
{
    uint32_t age = t->inserted - tag; /* 0 for the newest */
    return tag != 0 && age < t->count ? age + 1 : 0;
}

/* A small table is scanned, newest first, on the name keys kept in the links: cheaper than
 * hashing the value. *name_index: the newest entry with this name. */
#define SCAN_MAX 8
static uint32_t enc_dyn_scan(const pt_hpack_table_t *t, const pt_hpack_field_t *f,
                             uint32_t name_key, uint32_t *name_index)
{
    *name_index = 0;
    for (uint32_t i = 1; i <= t->count; i++) {
        uint32_t slot = (t->first + t->count - i) & (t->ent_cap - 1);
        const pt_hpack_entry_t *e = &t->ent[slot];
        if (t->link[slot].name_key != name_key || e->name_len != f->name_len ||
            (name_key > PT_HPACK_STATIC_COUNT &&
             memcmp(t->bytes + e->off, f->name, f->name_len) != 0))
            continue;
        if (e->value_len == f->value_len &&
            memcmp(t->bytes + e->off + e->name_len, f->value, f->value_len) == 0)
            return i;
        if (*name_index == 0)
            *name_index = i;
    }
    return 0;
}

/* A larger table is searched through its hash chains. An entry with this name and value
 * (its dynamic index), else 0; *name_index: the newest
 * entry with this name, looked for only when the static table lacks it (a static name
 * reference is preferred). Each walks one hash chain, newest first. */
static uint32_t enc_dyn_find(const pt_hpack_table_t *t, const pt_hpack_field_t *f,
                             uint32_t name_key, uint32_t exact_key, uint32_t *name_index)
{
    uint32_t mask = t->ent_cap - 1, index;
    *name_index = 0;
    for (uint32_t tag = t->bucket[exact_key % EXACT_BUCKETS]; (index = enc_live(t, tag)) != 0;
         tag = t->link[(tag - 1) & mask].next_exact) {
        const pt_hpack_link_t *l = &t->link[(tag - 1) & mask];
        const pt_hpack_entry_t *e = &t->ent[(tag - 1) & mask];
        if (l->exact_key != exact_key || e->name_len != f->name_len || e->value_len != f->value_len)
            continue;
        /* A name key up to 61 is a static index: equal keys, equal names. */
        if ((name_key > PT_HPACK_STATIC_COUNT &&
             memcmp(t->bytes + e->off, f->name, f->name_len) != 0) ||
            memcmp(t->bytes + e->off + e->name_len, f->value, f->value_len) != 0)
            continue;
        return index;
    }
    if (name_key <= PT_HPACK_STATIC_COUNT)
        return 0;
    for (uint32_t tag = t->bucket[EXACT_BUCKETS + name_key % NAME_BUCKETS];
         (index = enc_live(t, tag)) != 0; tag = t->link[(tag - 1) & mask].next_name) {
        const pt_hpack_link_t *l = &t->link[(tag - 1) & mask];
        const pt_hpack_entry_t *e = &t->ent[(tag - 1) & mask];
        if (l->name_key == name_key && e->name_len == f->name_len &&
            memcmp(t->bytes + e->off, f->name, f->name_len) == 0) {
            *name_index = index;
            break;
        }
    }
    return 0;
}

int pt_hpack_encode(pt_hpack_encoder_t *e, const pt_hpack_field_t *fields, size_t n, uint8_t *out,
                    size_t cap, size_t *out_len)
{
    if (cap < pt_hpack_encode_bound(fields, n))
        return PT_HPACK_E_BUFFER;
    uint8_t *p = out;
    if (e->update_pending) {
        if (e->min_pending < e->table.max_size)
            p = enc_int(p, 0x20, 5, e->min_pending);
        p = enc_int(p, 0x20, 5, e->table.max_size);
        e->update_pending = 0;
    }
    for (size_t i = 0; i < n; i++) {
        const pt_hpack_field_t *f = &fields[i];
        uint32_t exact;
        uint32_t sname = static_find(f->name, f->name_len, f->value, f->value_len, &exact);
        /* §7.1.3: credentials, and cookies short enough to guess, never enter a table,
         * here or at any intermediary (nghttp2's and so Envoy's rule). */
        int never = (f->flags & PT_HPACK_F_NEVER_INDEX) || sname == ST_AUTHORIZATION ||
                    sname == ST_PROXY_AUTHORIZATION || (sname == ST_COOKIE && f->value_len < 20);
        if (exact && !never) {
            p = enc_int(p, 0x80, 7, exact);
            continue;
        }
        uint32_t name_key = 0, exact_key = 0, dname = 0, name_index = sname;
        if (!never && e->table.count > 0) {
            name_key = enc_name_key(f->name, f->name_len, sname);
            uint32_t dexact;
            if (e->table.count <= SCAN_MAX) {
                dexact = enc_dyn_scan(&e->table, f, name_key, &dname);
            } else {
                exact_key = enc_exact_key(name_key, f->value, f->value_len);
                dexact = enc_dyn_find(&e->table, f, name_key, exact_key, &dname);
            }
            if (dexact) {
                p = enc_int(p, 0x80, 7, PT_HPACK_STATIC_COUNT + dexact);
                continue;
            }
            if (name_index == 0 && dname)
                name_index = PT_HPACK_STATIC_COUNT + dname;
        }
        /* Index what is likely to repeat. Per-message values (paths, lengths, validators,
         * locations, cookies set) would only push out what does repeat: not indexed,
         * unless PT_HPACK_ENC_INDEX_ALL; nor an entry over 3/4 of the table, which would
         * flush it. */
        int index = !never && !(f->flags & PT_HPACK_F_NO_INDEX) &&
                    32ull + f->name_len + f->value_len <= e->table.max_size / 4 * 3;
        if (index && !e->index_volatile &&
            (sname == ST_PATH || sname == ST_AGE || sname == ST_CONTENT_LENGTH ||
             sname == ST_ETAG || sname == ST_IF_MODIFIED_SINCE || sname == ST_IF_NONE_MATCH ||
             sname == ST_LOCATION || sname == ST_SET_COOKIE))
            index = 0;
        if (index)
            p = enc_int(p, 0x40, 6, name_index);
        else
            p = enc_int(p, never ? 0x10 : 0x00, 4, name_index);
        if (name_index == 0)
            p = enc_str(e, p, f->name, f->name_len);
        p = enc_str(e, p, f->value, f->value_len);
        if (index) {
            if (name_key == 0)
                name_key = enc_name_key(f->name, f->name_len, sname);
            if (exact_key == 0)
                exact_key = enc_exact_key(name_key, f->value, f->value_len);
            int rc = table_insert(&e->table, f->name, f->name_len, f->value, f->value_len, name_key,
                                  exact_key);
            if (rc < 0)
                return rc;
        }
    }
    *out_len = (size_t)(p - out);
    return 0;
}

const char *pt_hpack_strerror(int rc)
{
    switch (rc) {
    case PT_HPACK_OK:
        return "ok";
    case PT_HPACK_E_TRUNCATED:
        return "header block truncated";
    case PT_HPACK_E_INTEGER:
        return "integer overflow";
    case PT_HPACK_E_INDEX:
        return "index out of the tables";
    case PT_HPACK_E_HUFFMAN:
        return "invalid Huffman code (EOS or bad padding)";
    case PT_HPACK_E_STRING_TOO_LONG:
        return "string too long";
    case PT_HPACK_E_TABLE_SIZE:
        return "invalid dynamic table size update";
    case PT_HPACK_E_LIST_SIZE:
        return "header list too large";
    case PT_HPACK_E_NOMEM:
        return "out of memory";
    case PT_HPACK_E_BUFFER:
        return "output buffer too small";
    default:
        return "error";
    }
}
