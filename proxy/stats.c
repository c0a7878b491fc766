#include "proxy/stats.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "proxy/hash.h"

_Thread_local _Atomic uint64_t *pt_stat_slots;

/* Registry: guarded by a mutex because creation is rare (config build, a cluster's first
 * response with a given code on a worker) and readers (admin) may run while stats are
 * created on other threads.
 *
 * Infos live in fixed blocks that never move, so a pointer from pt_stats_info stays valid
 * after the lock is released while other threads go on creating stats (a realloc'ed array
 * would leave the admin reading freed memory).
 *
 * Released ids are handed out again, lowest first, so live stats gather at the low ids. A
 * released info is all zeros, as is its slot on every thread: pt_stats_trim gives pages
 * that hold only released stats back to the system (they read as zeros again when touched),
 * which is how memory goes back to where it was after thousands of clusters leave. */
#define INFO_BLOCK 4096 /* infos per block: whole pages (sizeof(pt_stat_info_t) is 16) */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_stat_info_t *info_blocks[PT_STATS_MAX / INFO_BLOCK]; /* id / INFO_BLOCK */
static _Atomic uint32_t ninfos = 1;  /* next never-used id; id 0 unused */
static uint32_t nlive;
static uint64_t *free_ids;           /* bit per id below ninfos: released and not reused */
static uint32_t free_words;          /* 64-bit words allocated in free_ids */
static uint32_t free_hint;           /* no free id in the words below this one */
static uint32_t nfree;
static int trim_due;                 /* stats were released since the last trim */
static uint32_t *buckets;            /* full-name hash: the first id of each chain, or 0 */
static uint32_t nbuckets;
/* Published under reg_lock, read without it when summing: atomic pointers. */
static _Atomic(_Atomic uint64_t *) thread_slots[PT_STATS_MAX_THREADS];

static pt_stat_info_t *info_at(uint32_t id)
{
    return &info_blocks[id / INFO_BLOCK][id % INFO_BLOCK];
}

#define FNV_SEED 1469598103934665603ull

static uint64_t hash_more(uint64_t h, const char *s)
{
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}


/* The hash of the full dotted name, from its parts (the same as pt_hash_name of the joined
 * string). */
static uint64_t hash_parts(const char *scope, const char *tag_value, const char *name)
{
    uint64_t h = hash_more(FNV_SEED, scope);
    h = hash_more(h, ".");
    if (tag_value != NULL) {
        h = hash_more(h, tag_value);
        h = hash_more(h, ".");
    }
    return hash_more(h, name);
}

int pt_stats_thread_init(void)
{
    if (pt_stat_slots != NULL)
        return 0;
    /* Anonymous mapping: pages are committed only when a stat in them is touched. */
    void *p = mmap(NULL, PT_STATS_MAX * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < PT_STATS_MAX_THREADS; i++) {
        if (atomic_load_explicit(&thread_slots[i], memory_order_relaxed) == NULL) {
            atomic_store_explicit(&thread_slots[i], p, memory_order_release);
            pt_stat_slots = p;
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (pt_stat_slots == NULL) {
        munmap(p, PT_STATS_MAX * sizeof(uint64_t));
        return -ENOSPC;
    }
    return 0;
}

/* A thread's counts must outlive it (the admin still sums them), so its slot array stays
 * registered; dispose only forgets the thread-local pointer. */
void pt_stats_thread_dispose(void)
{
    pt_stat_slots = NULL;
}

/* ---- interned strings ----------------------------------------------------------------- */

/* Scopes, stat names, tags and tag values repeat across stats (every cluster has the same
 * ~50 stat names, and its name in each of them), so each is stored once, counted by the
 * stats that use it, and freed with the last. A string also heads the list of stats that
 * have it as their tag value, which is how a cluster's stats are found to release them. */
typedef struct istr {
    struct istr *next;
    uint32_t refs;
    uint32_t tagged;      /* first id with this string as tag value, or 0 */
    uint32_t tag_index;   /* its place in pt_stat_tags once a tag value, else 0 */
    char s[];
} istr_t;

/* Indexes of pt_stat_families and pt_stat_tags: the next never used, and those given back
 * (reused last first, so the tables stay dense). Guarded by reg_lock. */
typedef struct index_pool {
    uint32_t next;
    uint32_t *free, nfree, cap;
} index_pool_t;
static index_pool_t fam_pool = {1, NULL, 0, 0}, tag_pool = {1, NULL, 0, 0};
const pt_stat_family_t *pt_stat_families[PT_STATS_MAX];
const char *pt_stat_tags[PT_STATS_MAX];

/* 0 when every index is taken (there are never more families or tag values than stats,
 * so only out of stats). */
static uint32_t index_take(index_pool_t *p)
{
    if (p->nfree > 0)
        return p->free[--p->nfree];
    return p->next < PT_STATS_MAX ? p->next++ : 0;
}

static void index_put(index_pool_t *p, uint32_t i)
{
    if (p->nfree == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 256;
        uint32_t *n = realloc(p->free, cap * sizeof(*n));
        if (n == NULL)
            return; /* the index is not reused: a table entry, not correctness */
        p->free = n;
        p->cap = cap;
    }
    p->free[p->nfree++] = i;
}

static istr_t **istr_buckets;
static uint32_t istr_nbuckets, istr_count;

static istr_t *istr_of(const char *s)
{
    return (istr_t *)(void *)(s - offsetof(istr_t, s));
}

static istr_t *istr_find(const char *s)
{
    if (istr_nbuckets == 0)
        return NULL;
    istr_t *e = istr_buckets[pt_hash_name(s) & (istr_nbuckets - 1)];
    while (e != NULL && strcmp(e->s, s) != 0)
        e = e->next;
    return e;
}

static const char *intern(const char *s)
{
    istr_t *e = istr_find(s);
    if (e != NULL) {
        e->refs++;
        return e->s;
    }
    if (istr_count + 1 > istr_nbuckets) {
        uint32_t nb = istr_nbuckets ? istr_nbuckets * 2 : 256;
        istr_t **n = calloc(nb, sizeof(*n));
        if (n == NULL)
            return NULL;
        for (uint32_t i = 0; i < istr_nbuckets; i++) {
            while (istr_buckets[i] != NULL) {
                istr_t *x = istr_buckets[i];
                istr_buckets[i] = x->next;
                uint32_t k = (uint32_t)(pt_hash_name(x->s) & (nb - 1));
                x->next = n[k];
                n[k] = x;
            }
        }
        free(istr_buckets);
        istr_buckets = n;
        istr_nbuckets = nb;
    }
    size_t len = strlen(s);
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->s, s, len + 1);
    e->refs = 1;
    e->tagged = 0;
    e->tag_index = 0;
    uint32_t k = (uint32_t)(pt_hash_name(s) & (istr_nbuckets - 1));
    e->next = istr_buckets[k];
    istr_buckets[k] = e;
    istr_count++;
    return e->s;
}

static void unintern(const char *s)
{
    if (s == NULL)
        return;
    istr_t *e = istr_of(s);
    if (--e->refs > 0)
        return;
    istr_t **pp = &istr_buckets[pt_hash_name(s) & (istr_nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    istr_count--;
    if (e->tag_index != 0) {
        pt_stat_tags[e->tag_index] = NULL;
        index_put(&tag_pool, e->tag_index);
    }
    free(e);
}

/* The index in pt_stat_tags of s (an interned string), given it on its first use as a tag
 * value; 0 when none is left. */
static uint32_t tag_index(const char *s)
{
    istr_t *e = istr_of(s);
    if (e->tag_index == 0 && (e->tag_index = index_take(&tag_pool)) != 0)
        pt_stat_tags[e->tag_index] = e->s;
    return e->tag_index;
}

static const char *prom_name(const char *scope, const char *name)
{
    char out[512];
    snprintf(out, sizeof(out), "envoy_%s_%s", scope, name);
    for (char *p = out; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ':'))
            *p = '_';
    }
    return intern(out);
}

/* ---- families ------------------------------------------------------------------------- */

static pt_stat_family_t **fam_buckets;
static uint32_t fam_nbuckets, fam_count;

static uint64_t family_hash(const char *scope, const char *tag, const char *name,
                            pt_stat_kind_t kind)
{
    uint64_t h = hash_more(FNV_SEED, scope);
    h = hash_more(h, "\x01");
    h = hash_more(h, tag ? tag : "");
    h = hash_more(h, "\x01");
    h = hash_more(h, name);
    return h ^ (uint64_t)kind;
}

static int same_tag(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* The family of these parts (h: their family_hash), or NULL; no reference taken. */
static pt_stat_family_t *family_find(uint64_t h, const char *scope, const char *tag,
                                     const char *name, pt_stat_kind_t kind)
{
    if (fam_nbuckets == 0)
        return NULL;
    for (pt_stat_family_t *f = fam_buckets[h & (fam_nbuckets - 1)]; f != NULL;
         f = f->next_in_bucket)
        if (f->kind == kind && strcmp(f->stat_name, name) == 0 && strcmp(f->scope, scope) == 0 &&
            same_tag(f->tag, tag))
            return f;
    return NULL;
}

/* The family of these parts (h: their family_hash), made on first use, with a reference.
 * NULL out of memory. */
static pt_stat_family_t *family_get(uint64_t h, const char *scope, const char *tag,
                                    const char *name, pt_stat_kind_t kind)
{
    pt_stat_family_t *found = family_find(h, scope, tag, name, kind);
    if (found != NULL) {
        found->refs++;
        return found;
    }
    if (fam_count + 1 > fam_nbuckets) {
        uint32_t nb = fam_nbuckets ? fam_nbuckets * 2 : 64;
        pt_stat_family_t **n = calloc(nb, sizeof(*n));
        if (n == NULL)
            return NULL;
        for (uint32_t i = 0; i < fam_nbuckets; i++) {
            while (fam_buckets[i] != NULL) {
                pt_stat_family_t *f = fam_buckets[i];
                fam_buckets[i] = f->next_in_bucket;
                uint64_t k = family_hash(f->scope, f->tag, f->stat_name, f->kind) & (nb - 1);
                f->next_in_bucket = n[k];
                n[k] = f;
            }
        }
        free(fam_buckets);
        fam_buckets = n;
        fam_nbuckets = nb;
    }
    pt_stat_family_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->scope = intern(scope);
    f->stat_name = intern(name);
    f->prom_name = prom_name(scope, name);
    f->tag = tag ? intern(tag) : NULL;
    f->kind = kind;
    f->refs = 1;
    f->index = index_take(&fam_pool);
    if (f->scope == NULL || f->stat_name == NULL || f->prom_name == NULL || (tag && !f->tag) ||
        f->index == 0) {
        if (f->index != 0)
            index_put(&fam_pool, f->index);
        unintern(f->scope);
        unintern(f->stat_name);
        unintern(f->prom_name);
        unintern(f->tag);
        free(f);
        return NULL;
    }
    uint64_t k = h & (fam_nbuckets - 1);
    f->next_in_bucket = fam_buckets[k];
    fam_buckets[k] = f;
    fam_count++;
    pt_stat_families[f->index] = f;
    return f;
}

static void family_put(const pt_stat_family_t *cf)
{
    pt_stat_family_t *f = (pt_stat_family_t *)cf;
    if (f == NULL || --f->refs > 0)
        return;
    pt_stat_family_t **pp =
        &fam_buckets[family_hash(f->scope, f->tag, f->stat_name, f->kind) & (fam_nbuckets - 1)];
    while (*pp != f)
        pp = &(*pp)->next_in_bucket;
    *pp = f->next_in_bucket;
    fam_count--;
    pt_stat_families[f->index] = NULL;
    index_put(&fam_pool, f->index);
    unintern(f->scope);
    unintern(f->stat_name);
    unintern(f->prom_name);
    unintern(f->tag);
    free(f);
}

/* ---- names ---------------------------------------------------------------------------- */

/* The full name's characters one by one, without building it. */
typedef struct name_cursor {
    const char *part[3];
    int i;
    const char *p;
} name_cursor_t;

static void cursor_init(name_cursor_t *c, const pt_stat_info_t *info)
{
    int n = 0;
    c->part[n++] = pt_stat_family(info)->scope;
    if (pt_stat_tag_value(info) != NULL)
        c->part[n++] = pt_stat_tag_value(info);
    c->part[n++] = pt_stat_family(info)->stat_name;
    if (n < 3)
        c->part[n] = NULL;
    c->i = 0;
    c->p = c->part[0];
}

/* The next character, '\0' at the end. */
static unsigned char cursor_next(name_cursor_t *c)
{
    if (*c->p != '\0')
        return (unsigned char)*c->p++;
    if (c->i + 1 >= 3 || c->part[c->i + 1] == NULL)
        return '\0';
    c->p = c->part[++c->i];
    return '.';
}

int pt_stats_cmp_names(const pt_stat_info_t *a, const pt_stat_info_t *b)
{
    name_cursor_t x, y;
    cursor_init(&x, a);
    cursor_init(&y, b);
    for (;;) {
        unsigned char cx = cursor_next(&x), cy = cursor_next(&y);
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (cx == '\0')
            return 0;
    }
}

static int name_is(const pt_stat_info_t *info, const char *full)
{
    name_cursor_t c;
    cursor_init(&c, info);
    for (;; full++) {
        unsigned char ch = cursor_next(&c);
        if (ch != (unsigned char)*full)
            return 0;
        if (ch == '\0')
            return 1;
    }
}

size_t pt_stat_full_name(const pt_stat_info_t *info, char *buf, size_t len)
{
    int n = pt_stat_tag_value(info) != NULL
                ? snprintf(buf, len, "%s.%s.%s", pt_stat_family(info)->scope, pt_stat_tag_value(info),
                           pt_stat_family(info)->stat_name)
                : snprintf(buf, len, "%s.%s", pt_stat_family(info)->scope, pt_stat_family(info)->stat_name);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- the registry ----------------------------------------------------------------------- */

static void text_drop(uint32_t id);
static void computed_drop(uint32_t id);
static void computed_shrink(void);
static int hist_add(uint32_t id, const char *scope, const char *tag_value, const char *name);
static void hist_drop(uint32_t id);
static void hist_shrink(void);

/* A registered stat's info (reg_lock held), or NULL. */
static pt_stat_info_t *live_info(uint32_t id)
{
    if (id == 0 || id >= atomic_load_explicit(&ninfos, memory_order_relaxed))
        return NULL;
    pt_stat_info_t *i = info_at(id);
    return i->family != 0 ? i : NULL;
}

/* Rebuilds the name hash with nb buckets (a power of two). */
static int rehash_to(uint32_t nb)
{
    uint32_t *n = calloc(nb, sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    uint32_t top = atomic_load_explicit(&ninfos, memory_order_relaxed);
    for (uint32_t id = 1; id < top; id++) {
        pt_stat_info_t *i = info_at(id);
        if (i->family == 0)
            continue; /* free */
        uint32_t k =
            (uint32_t)(hash_parts(pt_stat_family(i)->scope, pt_stat_tag_value(i), pt_stat_family(i)->stat_name) & (nb - 1));
        i->next_in_bucket = n[k];
        n[k] = id;
    }
    free(buckets);
    buckets = n;
    nbuckets = nb;
    return 0;
}

static int rehash(void)
{
    return rehash_to(nbuckets ? nbuckets * 2 : 1024);
}

static pt_stat_t find_locked(const char *full_name)
{
    if (nbuckets == 0)
        return 0;
    for (uint32_t id = buckets[pt_hash_name(full_name) & (nbuckets - 1)]; id != 0;
         id = info_at(id)->next_in_bucket)
        if (name_is(info_at(id), full_name))
            return id;
    return 0;
}

pt_stat_t pt_stats_find(const char *full_name)
{
    pthread_mutex_lock(&reg_lock);
    pt_stat_t id = find_locked(full_name);
    pthread_mutex_unlock(&reg_lock);
    return id;
}

_Static_assert((INFO_BLOCK * sizeof(pt_stat_info_t)) % 4096 == 0,
               "an info block is whole pages");

/* A free id: the lowest released one, else the next never used (its block mapped on first
 * use: pages of zeros, so a trimmed page is as good as a new one). */
static uint32_t take_id(void)
{
    if (nfree > 0) {
        while (free_ids[free_hint] == 0)
            free_hint++;
        uint64_t w = free_ids[free_hint];
        uint32_t id = free_hint * 64 + (uint32_t)__builtin_ctzll(w);
        free_ids[free_hint] = w & (w - 1);
        nfree--;
        return id;
    }
    uint32_t id = atomic_load_explicit(&ninfos, memory_order_relaxed);
    if (id >= PT_STAT_REJECTED)
        return 0;
    if (info_blocks[id / INFO_BLOCK] == NULL) {
        void *b = mmap(NULL, INFO_BLOCK * sizeof(pt_stat_info_t), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED)
            return 0;
        info_blocks[id / INFO_BLOCK] = b;
    }
    atomic_store_explicit(&ninfos, id + 1, memory_order_release);
    return id;
}

/* Returns id to the free set; -1 when the set cannot grow (the id is then lost, which
 * costs one info, not correctness). */
static int put_id(uint32_t id)
{
    memset(info_at(id), 0, sizeof(pt_stat_info_t));
    uint32_t word = id / 64;
    if (word >= free_words) {
        uint32_t nw = free_words ? free_words : 64;
        while (nw <= word)
            nw *= 2;
        uint64_t *n = realloc(free_ids, nw * sizeof(*n));
        if (n == NULL)
            return -1;
        memset(n + free_words, 0, (nw - free_words) * sizeof(*n));
        free_ids = n;
        free_words = nw;
    }
    free_ids[word] |= 1ull << (id % 64);
    if (word < free_hint)
        free_hint = word;
    nfree++;
    return 0;
}

static int (*keep_fn)(const void *, const char *);
static const void *keep_arg;

void pt_stats_set_matcher(int (*keep)(const void *arg, const char *full_name), const void *arg)
{
    pthread_mutex_lock(&reg_lock);
    keep_fn = keep;
    keep_arg = arg;
    pthread_mutex_unlock(&reg_lock);
}

pt_stat_t pt_stats_get(pt_stat_kind_t kind, const char *scope, const char *tag,
                       const char *tag_value, const char *name)
{
    if (tag == NULL)
        tag_value = NULL;
    if (strlen(scope) + (tag_value ? strlen(tag_value) + 1 : 0) + strlen(name) + 2 >
        PT_STAT_NAME_MAX)
        return 0; /* no readout could show it whole */
    pthread_mutex_lock(&reg_lock);
    pt_stat_t id = 0;
    uint64_t h = 0; /* the registry's hash of the name: a tagged stat found needs none */
    uint64_t fh = family_hash(scope, tag, name, kind);
    if (tag_value != NULL) {
        /* Among the stats of this tag value (a cluster's fifty, made one after another, so
         * their infos sit together): no walk through the whole registry's buckets, whose
         * every step is a cache miss when a CDS update makes thousands of clusters. */
        istr_t *t = istr_find(tag_value);
        if (t != NULL && t->tagged != 0) {
            /* Interned strings are unique, so a stat of this name and scope holds these very
             * pointers (compared, not the strings: a cluster's stats are made one after
             * another, each looked for among those made before it), and there is none when
             * either string was never interned. The family of this kind has them at hand;
             * a name asked for as another kind than it has is looked up. */
            const char *iname = NULL, *iscope = NULL;
            const pt_stat_family_t *fam = family_find(fh, scope, tag, name, kind);
            if (fam != NULL) {
                iname = fam->stat_name;
                iscope = fam->scope;
            } else {
                istr_t *in = istr_find(name), *is = istr_find(scope);
                iname = in != NULL ? in->s : NULL;
                iscope = is != NULL ? is->s : NULL;
            }
            for (id = iname != NULL && iscope != NULL ? t->tagged : 0; id != 0;
                 id = info_at(id)->next_same_tag) {
                const pt_stat_info_t *i = info_at(id);
                if (pt_stat_family(i)->stat_name == iname && pt_stat_family(i)->scope == iscope)
                    goto out;
            }
        }
    } else if (nbuckets != 0) {
        h = hash_parts(scope, tag_value, name);
        for (id = buckets[h & (nbuckets - 1)]; id != 0; id = info_at(id)->next_in_bucket) {
            const pt_stat_info_t *i = info_at(id);
            if (i->tag == 0 && strcmp(pt_stat_family(i)->stat_name, name) == 0 &&
                strcmp(pt_stat_family(i)->scope, scope) == 0)
                goto out;
        }
    }
    if (keep_fn != NULL) {
        char full[PT_STAT_NAME_MAX];
        if (tag_value != NULL)
            snprintf(full, sizeof(full), "%s.%s.%s", scope, tag_value, name);
        else
            snprintf(full, sizeof(full), "%s.%s", scope, name);
        if (!keep_fn(keep_arg, full)) {
            pthread_mutex_unlock(&reg_lock);
            return kind == PT_STAT_HISTOGRAM ? 0 : PT_STAT_REJECTED;
        }
    }
    if (tag_value != NULL || nbuckets == 0)
        h = hash_parts(scope, tag_value, name);
    /* Two to four stats a bucket: a bucket costs 1-2 bytes a stat. Chains are walked only
     * for stats without a tag value, by pt_stats_find and on release (a tagged stat is
     * looked for among its tag value's). */
    if ((nlive + 1) > 4 * (uint64_t)nbuckets && rehash() != 0)
        goto out;
    id = take_id();
    if (id == 0)
        goto out;
    pt_stat_info_t *info = info_at(id);
    const pt_stat_family_t *fam = family_get(fh, scope, tag, name, kind);
    const char *tv = tag ? intern(tag_value) : NULL;
    uint32_t tv_index = tv != NULL ? tag_index(tv) : 0;
    if (fam == NULL || (tag && tv_index == 0) ||
        (kind == PT_STAT_HISTOGRAM && hist_add(id, scope, tv, name) != 0)) {
        /* Out of memory: no stat rather than one with NULL names that readers trip on. */
        family_put(fam);
        unintern(tv);
        (void)put_id(id);
        id = 0;
        goto out;
    }
    info->family = fam->index;
    info->tag = tv_index;
    if (tv != NULL) {
        istr_t *t = istr_of(tv);
        info->next_same_tag = t->tagged;
        t->tagged = id;
    }
    uint32_t k = (uint32_t)(h & (nbuckets - 1));
    info->next_in_bucket = buckets[k];
    buckets[k] = id;
    nlive++;
out:
    /* A name that is a histogram's and is asked for as another kind, or the other way
     * round, is no stat: a histogram's slots hold pointers, not counts. */
    if (id != 0 && (kind == PT_STAT_HISTOGRAM) != (pt_stat_family(info_at(id))->kind == PT_STAT_HISTOGRAM))
        id = 0;
    pthread_mutex_unlock(&reg_lock);
    return id;
}

/* Zeroes a stat's slot on every thread, so its id starts again from nothing. */
static void zero_slots(uint32_t id)
{
    for (int t = 0; t < PT_STATS_MAX_THREADS; t++) {
        _Atomic uint64_t *s = atomic_load_explicit(&thread_slots[t], memory_order_acquire);
        if (s == NULL)
            break;
        atomic_store_explicit(&s[id], 0, memory_order_relaxed);
    }
}

unsigned pt_stats_release_tagged(const char *scope, const char *tag_value)
{
    unsigned n = 0;
    pthread_mutex_lock(&reg_lock);
    istr_t *t = istr_find(tag_value);
    if (t == NULL) {
        pthread_mutex_unlock(&reg_lock);
        return 0;
    }
    t->refs++; /* kept while its stats go */
    uint32_t *pp = &t->tagged;
    while (*pp != 0) {
        uint32_t id = *pp;
        pt_stat_info_t *i = info_at(id);
        if (strcmp(pt_stat_family(i)->scope, scope) != 0) {
            pp = &i->next_same_tag;
            continue;
        }
        *pp = i->next_same_tag;
        uint32_t *bp =
            &buckets[hash_parts(pt_stat_family(i)->scope, pt_stat_tag_value(i), pt_stat_family(i)->stat_name) & (nbuckets - 1)];
        while (*bp != id)
            bp = &info_at(*bp)->next_in_bucket;
        *bp = i->next_in_bucket;
        text_drop(id);
        computed_drop(id);
        if (pt_stat_family(i)->kind == PT_STAT_HISTOGRAM)
            hist_drop(id); /* before the slots that point to its copies are zeroed */
        family_put(pt_stat_family(i));
        unintern(pt_stat_tag_value(i));
        zero_slots(id);
        (void)put_id(id);
        nlive--;
        n++;
    }
    trim_due |= n > 0;
    unintern(t->s);
    pthread_mutex_unlock(&reg_lock);
    return n;
}

static int is_free(uint32_t id)
{
    return id / 64 < free_words && (free_ids[id / 64] >> (id % 64) & 1);
}

/* Whether every id in [from, to) is released (ids at or past ninfos count as released). */
static int all_free(uint32_t from, uint32_t to, uint32_t top)
{
    for (uint32_t id = from; id < to && id < top; id++)
        if (id == 0 || !is_free(id))
            return 0;
    return 1;
}

void pt_stats_trim(void)
{
    pthread_mutex_lock(&reg_lock);
    if (!trim_due) {
        pthread_mutex_unlock(&reg_lock);
        return;
    }
    trim_due = 0;
    const size_t page = 4096;
    uint32_t top = atomic_load_explicit(&ninfos, memory_order_relaxed);
    /* Infos: the pages of each block lying wholly in released infos. */
    for (uint32_t b = 0; b * INFO_BLOCK < top; b++) {
        char *base = (char *)info_blocks[b];
        size_t bytes = INFO_BLOCK * sizeof(pt_stat_info_t);
        for (size_t off = 0; off < bytes; off += page) {
            uint32_t first = b * INFO_BLOCK + (uint32_t)(off / sizeof(pt_stat_info_t));
            uint32_t last = b * INFO_BLOCK +
                            (uint32_t)((off + page - 1) / sizeof(pt_stat_info_t)) + 1;
            if (first >= top)
                break;
            if (all_free(first, last, top))
                madvise(base + off, page, MADV_DONTNEED);
        }
    }
    /* Slots: a page of slots on every thread, when its ids are all released (no thread
     * updates a released stat, so no update can be lost between the check and the
     * discard; ids are not handed out meanwhile: the lock is held). */
    const uint32_t per_page = (uint32_t)(page / sizeof(uint64_t));
    for (uint32_t first = 0; first < top; first += per_page) {
        if (!all_free(first, first + per_page, top))
            continue;
        for (int t = 0; t < PT_STATS_MAX_THREADS; t++) {
            _Atomic uint64_t *sl = atomic_load_explicit(&thread_slots[t], memory_order_acquire);
            if (sl == NULL)
                break;
            madvise((void *)&sl[first], page, MADV_DONTNEED);
        }
    }
    /* So does the computed gauges' table (thousands of clusters gone). Here, not where the
     * gauges go: that may be a worker, whose allocator arena would keep the memory. */
    computed_shrink();
    hist_shrink();
    /* The name hash shrinks with the stats. */
    if (nbuckets > 1024 && nlive < nbuckets) {
        uint32_t nb = 1024;
        while (2 * (uint64_t)nb < nlive)
            nb *= 2;
        (void)rehash_to(nb); /* out of memory: the larger one stays */
    }
    pthread_mutex_unlock(&reg_lock);
}

uint32_t pt_stats_live(void)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = nlive;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

pt_stat_t pt_stats_counter(const char *scope, const char *tag, const char *tag_value,
                           const char *name)
{
    return pt_stats_get(PT_STAT_COUNTER, scope, tag, tag_value, name);
}

pt_stat_t pt_stats_gauge(const char *scope, const char *tag, const char *tag_value,
                         const char *name)
{
    return pt_stats_get(PT_STAT_GAUGE, scope, tag, tag_value, name);
}

pt_stat_t pt_stats_text(const char *scope, const char *tag, const char *tag_value, const char *name)
{
    return pt_stats_get(PT_STAT_TEXT, scope, tag, tag_value, name);
}

pt_stat_t pt_stats_histogram(const char *scope, const char *tag, const char *tag_value,
                             const char *name)
{
    return pt_stats_get(PT_STAT_HISTOGRAM, scope, tag, tag_value, name);
}

/* Text readouts' values (rare: one per subscription), by id, in the heap: the info blocks
 * are mappings of their own that leak checkers do not look into. Guarded by reg_lock. */
typedef struct text_value {
    uint32_t id;
    char *text;
} text_value_t;
static text_value_t *texts;
static size_t ntexts, texts_cap;

static text_value_t *text_find(uint32_t id)
{
    for (size_t i = 0; i < ntexts; i++)
        if (texts[i].id == id)
            return &texts[i];
    return NULL;
}

static void text_drop(uint32_t id)
{
    text_value_t *t = text_find(id);
    if (t == NULL)
        return;
    free(t->text);
    *t = texts[--ntexts];
}

void pt_stat_set_text(pt_stat_t id, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (copy == NULL)
        return;
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *i = live_info(id);
    char *old = NULL;
    if (i != NULL && pt_stat_family(i)->kind == PT_STAT_TEXT) {
        text_value_t *t = text_find(id);
        if (t == NULL && ntexts == texts_cap) {
            size_t cap = texts_cap ? texts_cap * 2 : 16;
            text_value_t *n = realloc(texts, cap * sizeof(*n));
            if (n != NULL) {
                texts = n;
                texts_cap = cap;
            }
        }
        if (t == NULL && ntexts < texts_cap) {
            t = &texts[ntexts++];
            t->id = id;
            t->text = NULL;
        }
        if (t != NULL) {
            old = t->text;
            t->text = copy;
            copy = NULL;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    free(old);
    free(copy);
}

char *pt_stats_text_value(pt_stat_t id, int *set)
{
    char *out = NULL;
    if (set != NULL)
        *set = 0;
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *i = live_info(id);
    if (i != NULL && pt_stat_family(i)->kind == PT_STAT_TEXT) {
        text_value_t *t = text_find(id);
        out = strdup(t != NULL ? t->text : "");
        if (set != NULL)
            *set = t != NULL;
    }
    pthread_mutex_unlock(&reg_lock);
    return out;
}

void pt_stat_set(pt_stat_t id, int64_t value)
{
    if (pt_stat_slots != NULL)
        atomic_store_explicit(&pt_stat_slots[id], (uint64_t)value, memory_order_relaxed);
}

/* Computed gauges (circuit breaker counts: eight a cluster; membership: two), by id, in an
 * open-addressing table beside the infos, so the infos of every other stat stay small.
 * Guarded by reg_lock. Ten a cluster make this table a cluster's biggest share of the
 * registry after its infos, so an entry is 16 bytes (the function as an index into the few
 * there are) and the table is kept between half and three quarters full: its size is any
 * number (a slot is found by multiplying, not masking), grown by half when 3/4 full. */
typedef struct computed {
    uint32_t id; /* 0: empty */
    uint32_t fn; /* index into computed_fns */
    const void *arg;
} computed_t;
static computed_t *computed;
static uint32_t ncomputed, computed_cap;
/* The distinct functions of computed gauges: a handful in the code (a breaker's "open" and
 * "remaining" for each count, a cluster's membership). */
#define COMPUTED_FNS_MAX 64
static int64_t (*computed_fns[COMPUTED_FNS_MAX])(const void *);
static uint32_t ncomputed_fns;

static uint32_t computed_slot(uint32_t id)
{
    return (uint32_t)(((uint64_t)(id * 2654435761u) * computed_cap) >> 32);
}

static uint32_t computed_next(uint32_t k)
{
    return k + 1 < computed_cap ? k + 1 : 0;
}

static computed_t *computed_find(uint32_t id)
{
    if (computed_cap == 0)
        return NULL;
    for (uint32_t k = computed_slot(id);; k = computed_next(k)) {
        if (computed[k].id == id)
            return &computed[k];
        if (computed[k].id == 0)
            return NULL;
    }
}

/* Moves the table to cap slots (room for every entry, under 3/4 full). */
static int computed_resize(uint32_t cap)
{
    uint32_t old_cap = computed_cap;
    computed_t *old = computed, *n = calloc(cap, sizeof(*n));
    if (n == NULL)
        return -1;
    computed = n;
    computed_cap = cap;
    for (uint32_t i = 0; i < old_cap; i++) {
        if (old[i].id == 0)
            continue;
        uint32_t k = computed_slot(old[i].id);
        while (computed[k].id != 0)
            k = computed_next(k);
        computed[k] = old[i];
    }
    free(old);
    return 0;
}

static void computed_shrink(void)
{
    if (computed_cap <= 64 || 8 * (uint64_t)ncomputed >= computed_cap)
        return;
    uint32_t cap = 2 * ncomputed + 2;
    (void)computed_resize(cap < 64 ? 64 : cap); /* out of memory: the larger one stays */
}

static int computed_grow(void)
{
    if (4 * (uint64_t)(ncomputed + 1) <= 3 * (uint64_t)computed_cap)
        return 0;
    return computed_resize(computed_cap ? computed_cap + computed_cap / 2 : 64);
}

/* Empties a slot, moving back the entries after it that would not be found otherwise. */
static void computed_drop(uint32_t id)
{
    computed_t *e = computed_find(id);
    if (e == NULL)
        return;
    uint32_t hole = (uint32_t)(e - computed);
    for (uint32_t k = computed_next(hole); computed[k].id != 0; k = computed_next(k)) {
        uint32_t home = computed_slot(computed[k].id);
        /* Movable into the hole when its home is not in (hole, k], cyclically. */
        if ((k > hole && (home <= hole || home > k)) || (k < hole && home <= hole && home > k)) {
            computed[hole] = computed[k];
            hole = k;
        }
    }
    computed[hole] = (computed_t){0};
    ncomputed--;
    trim_due = 1; /* the table shrinks in pt_stats_trim, on the main thread */
}

/* fn's index in computed_fns, added if new; -1 when the table is full (reg_lock held). */
static int computed_fn_index(int64_t (*fn)(const void *))
{
    for (uint32_t i = 0; i < ncomputed_fns; i++)
        if (computed_fns[i] == fn)
            return (int)i;
    if (ncomputed_fns == COMPUTED_FNS_MAX)
        return -1;
    computed_fns[ncomputed_fns] = fn;
    return (int)ncomputed_fns++;
}

void pt_stats_gauge_fn(pt_stat_t id, int64_t (*fn)(const void *), const void *arg)
{
    pthread_mutex_lock(&reg_lock);
    int fi = computed_fn_index(fn);
    if (live_info(id) != NULL && fi >= 0) {
        computed_t *e = computed_find(id);
        if (e == NULL && computed_grow() == 0) {
            uint32_t k = computed_slot(id);
            while (computed[k].id != 0)
                k = computed_next(k);
            e = &computed[k];
            e->id = id;
            ncomputed++;
        }
        if (e != NULL) { /* out of memory: the gauge reads its slots (0) */
            e->fn = (uint32_t)fi;
            e->arg = arg;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

void pt_stats_gauge_fn_clear(pt_stat_t id, const void *arg)
{
    pthread_mutex_lock(&reg_lock);
    /* A newer snapshot may already own the gauge: only its current owner clears it. */
    computed_t *e = computed_find(id);
    if (e != NULL && e->arg == arg)
        computed_drop(id);
    pthread_mutex_unlock(&reg_lock);
}

/* ---- histograms ----------------------------------------------------------------------- */

/* Prometheus bucket bounds, shared by the histograms that have the same (guarded by
 * reg_lock). The defaults are static. */
typedef struct hist_bounds {
    struct hist_bounds *next;
    uint32_t refs, n;
    double v[];
} hist_bounds_t;
static hist_bounds_t *bounds_list;

/* What the merges of a histogram made of its values: made by the first merge that finds
 * any. Most histograms of most clusters never get a value (a cluster nobody calls), and
 * this is ~450 bytes where the record is 32. */
typedef struct hist_merged {
    uint64_t *cum[PT_HIST_CHUNKS]; /* cumulative counts, a chunk allocated when it has any */
    uint64_t cum_count, cum_sum, interval_count;
    double q_interval[PT_HIST_NQ], q_cum[PT_HIST_NQ];
} hist_merged_t;

/* One histogram: the threads' copies and, owned by the merging thread, the state of the
 * last merge (NULL until a merge found values: it reads as no values, the quantiles NaN).
 * Found by id in an open-addressing table (guarded by reg_lock), like the computed gauges:
 * histograms are a few per cluster among fifty stats. */
typedef struct hist_rec {
    uint32_t id;
    uint32_t nbounds;
    const double *bounds; /* a hist_bounds_t's v, or pt_hist_default_bounds */
    /* Pushed by recording threads under reg_lock (release); read by the merge (acquire). */
    _Atomic(pt_hist_tls_t *) threads;
    hist_merged_t *merged;
} hist_rec_t;
static hist_rec_t **hists;
static uint32_t nhists, hists_cap; /* cap a power of two, at most 3/4 full */
static uint32_t nhist_threads;     /* thread copies alive (reg_lock) */
static pt_hist_bounds_fn bounds_fn;
static void *bounds_arg;
static void (*bounds_dispose)(void *);

static uint32_t hist_slot(uint32_t id)
{
    return (id * 2654435761u) & (hists_cap - 1);
}

static hist_rec_t *hist_find(uint32_t id)
{
    if (hists_cap == 0)
        return NULL;
    for (uint32_t k = hist_slot(id);; k = (k + 1) & (hists_cap - 1)) {
        if (hists[k] == NULL)
            return NULL;
        if (hists[k]->id == id)
            return hists[k];
    }
}

static int hists_resize(uint32_t cap)
{
    hist_rec_t **n = calloc(cap, sizeof(*n)), **old = hists;
    uint32_t old_cap = hists_cap;
    if (n == NULL)
        return -1;
    hists = n;
    hists_cap = cap;
    for (uint32_t i = 0; i < old_cap; i++) {
        if (old[i] == NULL)
            continue;
        uint32_t k = hist_slot(old[i]->id);
        while (hists[k] != NULL)
            k = (k + 1) & (cap - 1);
        hists[k] = old[i];
    }
    free(old);
    return 0;
}

static void hist_shrink(void)
{
    if (hists_cap <= 64 || 8 * (uint64_t)nhists >= hists_cap)
        return;
    uint32_t cap = 64;
    while (cap < 2 * nhists + 2)
        cap *= 2;
    (void)hists_resize(cap); /* out of memory: the larger one stays */
}

static void bounds_put(const double *v)
{
    if (v == pt_hist_default_bounds)
        return;
    for (hist_bounds_t **pp = &bounds_list; *pp != NULL; pp = &(*pp)->next) {
        hist_bounds_t *b = *pp;
        if (b->v != v)
            continue;
        if (--b->refs == 0) {
            *pp = b->next;
            free(b);
        }
        return;
    }
}

/* The shared copy of bounds v[0..n), NULL out of memory. */
static const double *bounds_get(const double *v, uint32_t n)
{
    for (hist_bounds_t *b = bounds_list; b != NULL; b = b->next) {
        if (b->n == n && memcmp(b->v, v, n * sizeof(double)) == 0) {
            b->refs++;
            return b->v;
        }
    }
    hist_bounds_t *b = malloc(sizeof(*b) + n * sizeof(double));
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->n = n;
    memcpy(b->v, v, n * sizeof(double));
    b->next = bounds_list;
    bounds_list = b;
    return b->v;
}

void pt_stats_set_histogram_bounds(pt_hist_bounds_fn fn, void *arg, void (*dispose)(void *))
{
    pthread_mutex_lock(&reg_lock);
    void *old = bounds_arg;
    void (*old_dispose)(void *) = bounds_dispose;
    bounds_fn = fn;
    bounds_arg = arg;
    bounds_dispose = dispose;
    pthread_mutex_unlock(&reg_lock);
    if (old_dispose != NULL)
        old_dispose(old);
}

/* A new histogram's record (reg_lock held). */
static int hist_add(uint32_t id, const char *scope, const char *tag_value, const char *name)
{
    if (4 * (uint64_t)(nhists + 1) > 3 * (uint64_t)hists_cap &&
        hists_resize(hists_cap ? hists_cap * 2 : 64) != 0)
        return -1;
    hist_rec_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->id = id;
    const double *v = NULL;
    uint32_t n = 0;
    if (bounds_fn != NULL) {
        char full[PT_STAT_NAME_MAX];
        if (tag_value != NULL)
            snprintf(full, sizeof(full), "%s.%s.%s", scope, tag_value, name);
        else
            snprintf(full, sizeof(full), "%s.%s", scope, name);
        v = bounds_fn(bounds_arg, full, &n);
    }
    if (v != NULL && n > 0) {
        h->bounds = bounds_get(v, n);
        h->nbounds = n;
        if (h->bounds == NULL) {
            free(h);
            return -1;
        }
    } else {
        h->bounds = pt_hist_default_bounds;
        h->nbounds = PT_HIST_DEFAULT_NBOUNDS;
    }
    uint32_t k = hist_slot(id);
    while (hists[k] != NULL)
        k = (k + 1) & (hists_cap - 1);
    hists[k] = h;
    nhists++;
    return 0;
}

/* Frees a histogram and every thread's copy of it (reg_lock held; nothing records it any
 * more: its stat is being released). */
static void hist_drop(uint32_t id)
{
    hist_rec_t *h = hist_find(id);
    if (h == NULL)
        return;
    pt_hist_tls_t *t = atomic_load_explicit(&h->threads, memory_order_acquire);
    while (t != NULL) {
        pt_hist_tls_t *next = t->next;
        for (unsigned c = 0; c < PT_HIST_CHUNKS; c++)
            free((void *)atomic_load_explicit(&t->chunks[c], memory_order_relaxed));
        free(t);
        nhist_threads--;
        t = next;
    }
    if (h->merged != NULL) {
        for (unsigned c = 0; c < PT_HIST_CHUNKS; c++)
            free(h->merged->cum[c]);
        free(h->merged);
    }
    bounds_put(h->bounds);
    /* Out of the table, moving back the entries after it that would not be found. */
    uint32_t hole = hist_slot(id);
    while (hists[hole] != h)
        hole = (hole + 1) & (hists_cap - 1);
    uint32_t mask = hists_cap - 1;
    for (uint32_t k = (hole + 1) & mask; hists[k] != NULL; k = (k + 1) & mask) {
        uint32_t home = hist_slot(hists[k]->id);
        if ((k > hole && (home <= hole || home > k)) || (k < hole && home <= hole && home > k)) {
            hists[hole] = hists[k];
            hole = k;
        }
    }
    hists[hole] = NULL;
    nhists--;
    free(h);
}

void pt_hist_record_slow(pt_stat_t id, uint64_t v)
{
    _Atomic uint64_t *slots = pt_stat_slots;
    if (slots == NULL || id == 0)
        return;
    pt_hist_tls_t *t =
        (pt_hist_tls_t *)(uintptr_t)atomic_load_explicit(&slots[id], memory_order_relaxed);
    if (t == NULL) {
        /* This thread's first value: its copy joins the histogram's list. */
        t = calloc(1, sizeof(*t));
        if (t == NULL)
            return; /* the value is lost, nothing else */
        pthread_mutex_lock(&reg_lock);
        const pt_stat_info_t *info = live_info(id);
        hist_rec_t *h = info != NULL && pt_stat_family(info)->kind == PT_STAT_HISTOGRAM ? hist_find(id)
                                                                                : NULL;
        if (h != NULL) {
            t->next = atomic_load_explicit(&h->threads, memory_order_relaxed);
            atomic_store_explicit(&h->threads, t, memory_order_release);
            nhist_threads++;
        }
        pthread_mutex_unlock(&reg_lock);
        if (h == NULL) {
            free(t);
            return;
        }
        atomic_store_explicit(&slots[id], (uint64_t)(uintptr_t)t, memory_order_release);
    }
    unsigned chunk = pt_hist_bucket(v) >> PT_HIST_SUB_BITS;
    if (atomic_load_explicit(&t->chunks[chunk], memory_order_relaxed) == NULL) {
        _Atomic uint64_t *c = calloc(PT_HIST_SUB, sizeof(*c));
        if (c == NULL)
            return;
        atomic_store_explicit(&t->chunks[chunk], c, memory_order_release);
    }
    pt_hist_record(id, v);
}

/* One histogram's merge: what every thread recorded, summed into counts[] (the chunks any
 * thread has), becomes the cumulative state; what it adds to the previous one (delta[]) is
 * the interval. counts and delta are scratch space of PT_HIST_BUCKETS each, of which only
 * the chunks in use are written and read: a latency histogram has a handful. */
static uint32_t hist_merge_one(hist_rec_t *h, uint64_t *counts, uint64_t *delta)
{
    /* Nothing recorded since the last merge (the common case for most clusters): an empty
     * interval, and no bucket is read. */
    int changed = 0;
    pt_hist_tls_t *first = atomic_load_explicit(&h->threads, memory_order_acquire);
    for (pt_hist_tls_t *t = first; t != NULL; t = t->next)
        changed |= atomic_load_explicit(&t->count, memory_order_acquire) != t->merged_count;
    hist_merged_t *m = h->merged;
    if (!changed) {
        if (m != NULL) {
            m->interval_count = 0;
            for (int i = 0; i < PT_HIST_NQ; i++)
                m->q_interval[i] = NAN;
        }
        return 0;
    }
    if (m == NULL && (m = h->merged = calloc(1, sizeof(*m))) == NULL)
        return 0; /* out of memory: merged at the next merge */
    uint64_t sum = 0;
    uint32_t used = 0; /* bit per chunk with counts */
    for (pt_hist_tls_t *t = first; t != NULL; t = t->next) {
        /* The count first (acquire): buckets are read after it, so they hold at least the
         * values it counts; one recorded meanwhile shows in the next merge's count too. */
        t->merged_count = atomic_load_explicit(&t->count, memory_order_acquire);
        sum += atomic_load_explicit(&t->sum, memory_order_relaxed);
        for (unsigned c = 0; c < PT_HIST_CHUNKS; c++) {
            _Atomic uint64_t *ch = atomic_load_explicit(&t->chunks[c], memory_order_acquire);
            if (ch == NULL)
                continue;
            uint64_t *to = &counts[c * PT_HIST_SUB];
            if (!(used & (1u << c))) {
                used |= 1u << c;
                memset(to, 0, PT_HIST_SUB * sizeof(*to));
            }
            for (unsigned i = 0; i < PT_HIST_SUB; i++)
                to[i] += atomic_load_explicit(&ch[i], memory_order_relaxed);
        }
    }
    /* The interval is counts - cumulative; then cumulative = counts. */
    uint64_t total = 0, interval = 0;
    for (unsigned c = 0; c < PT_HIST_CHUNKS; c++) {
        if (!(used & (1u << c)))
            continue;
        if (m->cum[c] == NULL && (m->cum[c] = calloc(PT_HIST_SUB, sizeof(uint64_t))) == NULL) {
            used &= ~(1u << c); /* out of memory: this merge leaves the chunk out */
            continue;
        }
        for (unsigned i = 0; i < PT_HIST_SUB; i++) {
            uint64_t now = counts[c * PT_HIST_SUB + i], before = m->cum[c][i];
            uint64_t d = now > before ? now - before : 0;
            delta[c * PT_HIST_SUB + i] = d;
            interval += d;
            total += now;
            m->cum[c][i] = now;
        }
    }
    m->interval_count = interval;
    m->cum_count = total;
    m->cum_sum = sum;
    pt_hist_quantiles_in(delta, used, interval, pt_hist_quantiles, PT_HIST_NQ, m->q_interval);
    pt_hist_quantiles_in(counts, used, total, pt_hist_quantiles, PT_HIST_NQ, m->q_cum);
    return interval > 0 ? used : 0;
}

void pt_stats_merge_histograms(void)
{
    pt_stats_merge_histograms_visit(NULL, NULL);
}

void pt_stats_merge_histograms_visit(pt_hist_interval_fn fn, void *arg)
{
    /* The records, taken under the lock; merged without it (they are freed only by
     * pt_stats_release_tagged, which runs on this same thread). */
    pthread_mutex_lock(&reg_lock);
    uint32_t n = 0;
    hist_rec_t **list = nhists ? malloc(nhists * sizeof(*list)) : NULL;
    for (uint32_t k = 0; list != NULL && k < hists_cap; k++)
        if (hists[k] != NULL)
            list[n++] = hists[k];
    pthread_mutex_unlock(&reg_lock);
    uint64_t *counts = n ? malloc(2 * PT_HIST_BUCKETS * sizeof(*counts)) : NULL;
    for (uint32_t i = 0; counts != NULL && i < n; i++) {
        uint32_t chunks = hist_merge_one(list[i], counts, counts + PT_HIST_BUCKETS);
        if (fn != NULL && chunks != 0)
            fn(arg, list[i]->id, counts + PT_HIST_BUCKETS, chunks,
               list[i]->merged->interval_count, list[i]->merged->cum_sum);
    }
    free(counts);
    free(list);
}

int pt_stats_histogram_summary(pt_stat_t id, pt_hist_summary_t *out, uint64_t *bucket_counts)
{
    pthread_mutex_lock(&reg_lock);
    hist_rec_t *h = hist_find(id);
    pthread_mutex_unlock(&reg_lock);
    memset(out, 0, sizeof(*out));
    if (h == NULL)
        return -1;
    const hist_merged_t *m = h->merged;
    out->bounds = h->bounds;
    out->nbounds = h->nbounds;
    if (m == NULL) { /* no value merged yet */
        for (int i = 0; i < PT_HIST_NQ; i++)
            out->interval[i] = out->cumulative[i] = NAN;
        if (bucket_counts != NULL)
            memset(bucket_counts, 0, h->nbounds * sizeof(*bucket_counts));
        return 0;
    }
    out->used = m->cum_count > 0;
    out->count = m->cum_count;
    out->sum = m->cum_sum;
    out->interval_count = m->interval_count;
    memcpy(out->interval, m->q_interval, sizeof(out->interval));
    memcpy(out->cumulative, m->q_cum, sizeof(out->cumulative));
    if (bucket_counts != NULL) {
        uint64_t counts[PT_HIST_BUCKETS] = {0};
        for (unsigned c = 0; c < PT_HIST_CHUNKS; c++)
            if (m->cum[c] != NULL)
                memcpy(&counts[c * PT_HIST_SUB], m->cum[c], PT_HIST_SUB * sizeof(uint64_t));
        for (uint32_t i = 0; i < h->nbounds; i++)
            bucket_counts[i] = pt_hist_count_le(counts, h->bounds[i]);
    }
    return 0;
}

int pt_stats_histogram_counts(pt_stat_t id, uint64_t *counts)
{
    pthread_mutex_lock(&reg_lock);
    hist_rec_t *h = hist_find(id);
    pthread_mutex_unlock(&reg_lock);
    if (h == NULL)
        return -1;
    const hist_merged_t *m = h->merged;
    for (unsigned c = 0; c < PT_HIST_CHUNKS; c++) {
        if (m != NULL && m->cum[c] != NULL)
            memcpy(&counts[c * PT_HIST_SUB], m->cum[c], PT_HIST_SUB * sizeof(uint64_t));
        else
            memset(&counts[c * PT_HIST_SUB], 0, PT_HIST_SUB * sizeof(uint64_t));
    }
    return 0;
}

uint32_t pt_stats_histograms_live(void)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = nhists;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

uint32_t pt_stats_histogram_threads(void)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = nhist_threads;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

uint64_t pt_stats_value(pt_stat_t id)
{
    uint64_t sum = 0;
    if (id == 0 || id == PT_STAT_REJECTED)
        return 0; /* a rejected stat reads 0, as Envoy's null stats do */
    int64_t (*fn)(const void *) = NULL;
    const void *arg = NULL;
    pthread_mutex_lock(&reg_lock);
    const pt_stat_info_t *info = live_info(id);
    if (info != NULL && pt_stat_family(info)->kind == PT_STAT_HISTOGRAM) {
        /* Its slots hold pointers: its value is the count of its merged values. */
        const hist_rec_t *h = hist_find(id);
        sum = h != NULL && h->merged != NULL ? h->merged->cum_count : 0;
        pthread_mutex_unlock(&reg_lock);
        return sum;
    }
    if (info != NULL && ncomputed != 0) {
        const computed_t *e = computed_find(id);
        if (e != NULL)
            fn = computed_fns[e->fn], arg = e->arg;
    }
    pthread_mutex_unlock(&reg_lock);
    if (fn != NULL)
        return (uint64_t)fn(arg);
    for (int i = 0; i < PT_STATS_MAX_THREADS; i++) {
        _Atomic uint64_t *s = atomic_load_explicit(&thread_slots[i], memory_order_acquire);
        if (s == NULL)
            break;
        sum += atomic_load_explicit(&s[id], memory_order_relaxed);
    }
    return sum;
}

int64_t pt_stats_gauge_value(pt_stat_t id)
{
    return (int64_t)pt_stats_value(id);
}

uint32_t pt_stats_count(void)
{
    return atomic_load_explicit(&ninfos, memory_order_acquire);
}

const pt_stat_info_t *pt_stats_info(pt_stat_t id)
{
    pthread_mutex_lock(&reg_lock);
    const pt_stat_info_t *i = live_info(id);
    pthread_mutex_unlock(&reg_lock);
    return i;
}

static int cmp_by_name(const void *a, const void *b)
{
    return pt_stats_cmp_names(info_at(*(const pt_stat_t *)a), info_at(*(const pt_stat_t *)b));
}

pt_stat_t *pt_stats_live_ids(uint32_t *count)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t top = atomic_load_explicit(&ninfos, memory_order_relaxed);
    pt_stat_t *ids = malloc((nlive ? nlive : 1) * sizeof(*ids));
    uint32_t n = 0;
    for (uint32_t id = 1; ids != NULL && id < top; id++)
        if (info_at(id)->family != 0)
            ids[n++] = id;
    pthread_mutex_unlock(&reg_lock);
    *count = n;
    return ids;
}

pt_stat_t *pt_stats_sorted(uint32_t *count)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t top = atomic_load_explicit(&ninfos, memory_order_relaxed);
    pt_stat_t *ids = malloc((nlive ? nlive : 1) * sizeof(*ids));
    uint32_t n = 0;
    if (ids != NULL) {
        for (uint32_t id = 1; id < top; id++)
            if (info_at(id)->family != 0)
                ids[n++] = id;
        qsort(ids, n, sizeof(*ids), cmp_by_name);
    }
    pthread_mutex_unlock(&reg_lock);
    *count = n;
    return ids;
}
