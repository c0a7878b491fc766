#include "proxy/stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

_Thread_local _Atomic uint64_t *pt_stat_slots;

/* Registry: append-only; guarded by a mutex because creation is rare (config build, a
 * cluster's first response with a given code on a worker) and readers (admin) may run
 * while stats are created on other threads.
 *
 * Infos live in fixed blocks that never move, so a pointer from pt_stats_info stays valid
 * after the lock is released while other threads go on creating stats (a realloc'ed array
 * would leave the admin reading freed memory). */
#define INFO_BLOCK 4096
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pt_stat_info_t *info_blocks[PT_STATS_MAX / INFO_BLOCK]; /* id / INFO_BLOCK */
static uint32_t ninfos = 1;          /* next id; id 0 unused */
static uint32_t *hash_slots;         /* open addressing: id or 0 */
static uint32_t hash_cap;
/* Published under reg_lock, read without it when summing: atomic pointers. */
static _Atomic(_Atomic uint64_t *) thread_slots[PT_STATS_MAX_THREADS];

static pt_stat_info_t *info_at(uint32_t id)
{
    return &info_blocks[id / INFO_BLOCK][id % INFO_BLOCK];
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
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

static int hash_grow(void)
{
    uint32_t ncap = hash_cap ? hash_cap * 2 : 1024;
    uint32_t *n = calloc(ncap, sizeof(uint32_t));
    if (n == NULL)
        return -ENOMEM;
    for (uint32_t id = 1; id < ninfos; id++) {
        uint64_t h = hash_str(info_at(id)->name) & (ncap - 1);
        while (n[h] != 0)
            h = (h + 1) & (ncap - 1);
        n[h] = id;
    }
    free(hash_slots);
    hash_slots = n;
    hash_cap = ncap;
    return 0;
}

static pt_stat_t find_locked(const char *name)
{
    if (hash_cap == 0)
        return 0;
    uint64_t h = hash_str(name) & (hash_cap - 1);
    while (hash_slots[h] != 0) {
        if (strcmp(info_at(hash_slots[h])->name, name) == 0)
            return hash_slots[h];
        h = (h + 1) & (hash_cap - 1);
    }
    return 0;
}

pt_stat_t pt_stats_find(const char *full_name)
{
    pthread_mutex_lock(&reg_lock);
    pt_stat_t id = find_locked(full_name);
    pthread_mutex_unlock(&reg_lock);
    return id;
}

/* Interned strings (reg_lock held): the Prometheus names, tags and tag values repeat across
 * stats (every cluster has the same ~50 stat names and its name in each of them), so each
 * is stored once. Like the registry, they live for the process. */
static char **intern_slots;
static uint32_t intern_cap, intern_count;

static const char *intern(const char *s)
{
    if ((intern_count + 1) * 2 > intern_cap) {
        uint32_t ncap = intern_cap ? intern_cap * 2 : 1024;
        char **n = calloc(ncap, sizeof(*n));
        if (n == NULL)
            return NULL;
        for (uint32_t i = 0; i < intern_cap; i++) {
            if (intern_slots[i] == NULL)
                continue;
            uint64_t h = hash_str(intern_slots[i]) & (ncap - 1);
            while (n[h] != NULL)
                h = (h + 1) & (ncap - 1);
            n[h] = intern_slots[i];
        }
        free(intern_slots);
        intern_slots = n;
        intern_cap = ncap;
    }
    uint64_t h = hash_str(s) & (intern_cap - 1);
    for (; intern_slots[h] != NULL; h = (h + 1) & (intern_cap - 1))
        if (strcmp(intern_slots[h], s) == 0)
            return intern_slots[h];
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    intern_slots[h] = copy;
    intern_count++;
    return copy;
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

pt_stat_t pt_stats_get(pt_stat_kind_t kind, const char *scope, const char *tag,
                       const char *tag_value, const char *name)
{
    char full[1024];
    if (tag != NULL)
        snprintf(full, sizeof(full), "%s.%s.%s", scope, tag_value, name);
    else
        snprintf(full, sizeof(full), "%s.%s", scope, name);

    pthread_mutex_lock(&reg_lock);
    pt_stat_t id = find_locked(full);
    if (id != 0 || ninfos >= PT_STATS_MAX)
        goto out;
    if (info_blocks[ninfos / INFO_BLOCK] == NULL) {
        info_blocks[ninfos / INFO_BLOCK] = calloc(INFO_BLOCK, sizeof(pt_stat_info_t));
        if (info_blocks[ninfos / INFO_BLOCK] == NULL)
            goto out;
    }
    if ((ninfos + 1) * 2 > hash_cap && hash_grow() != 0)
        goto out;
    pt_stat_info_t *info = info_at(ninfos);
    info->name = strdup(full);
    info->prom_name = prom_name(scope, name);
    info->tag = tag ? intern(tag) : NULL;
    info->tag_value = tag ? intern(tag_value) : NULL;
    info->kind = kind;
    if (info->name == NULL || info->prom_name == NULL ||
        (tag && (!info->tag || !info->tag_value))) {
        /* Out of memory: no stat rather than one with NULL names that readers trip on (the
         * interned strings stay for other stats). */
        free((char *)info->name);
        memset(info, 0, sizeof(*info));
        goto out;
    }
    id = ninfos++;
    uint64_t h = hash_str(full) & (hash_cap - 1);
    while (hash_slots[h] != 0)
        h = (h + 1) & (hash_cap - 1);
    hash_slots[h] = id;
out:
    pthread_mutex_unlock(&reg_lock);
    return id;
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

void pt_stat_set_text(pt_stat_t id, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (copy == NULL)
        return;
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *i = id > 0 && id < ninfos ? info_at(id) : NULL;
    char *old = NULL;
    if (i != NULL && i->kind == PT_STAT_TEXT) {
        old = i->text;
        i->text = copy;
        copy = NULL;
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
    pt_stat_info_t *i = id > 0 && id < ninfos ? info_at(id) : NULL;
    if (i != NULL && i->kind == PT_STAT_TEXT) {
        out = strdup(i->text ? i->text : "");
        if (set != NULL)
            *set = i->text != NULL;
    }
    pthread_mutex_unlock(&reg_lock);
    return out;
}

void pt_stat_set(pt_stat_t id, int64_t value)
{
    if (pt_stat_slots != NULL)
        atomic_store_explicit(&pt_stat_slots[id], (uint64_t)value, memory_order_relaxed);
}

void pt_stats_gauge_fn(pt_stat_t id, int64_t (*fn)(const void *), const void *arg)
{
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *i = id > 0 && id < ninfos ? info_at(id) : NULL;
    pthread_mutex_unlock(&reg_lock);
    if (i == NULL)
        return;
    atomic_store(&i->fn_arg, arg);
    atomic_store(&i->fn, fn);
}

void pt_stats_gauge_fn_clear(pt_stat_t id, const void *arg)
{
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *i = id > 0 && id < ninfos ? info_at(id) : NULL;
    pthread_mutex_unlock(&reg_lock);
    /* A newer snapshot may already own the gauge: only its current owner clears it. */
    if (i != NULL && atomic_load(&i->fn_arg) == arg) {
        atomic_store(&i->fn, NULL);
        atomic_store(&i->fn_arg, NULL);
    }
}

uint64_t pt_stats_value(pt_stat_t id)
{
    uint64_t sum = 0;
    if (id == 0)
        return 0;
    pthread_mutex_lock(&reg_lock);
    pt_stat_info_t *info = id < ninfos ? info_at(id) : NULL;
    pthread_mutex_unlock(&reg_lock);
    if (info != NULL) {
        int64_t (*fn)(const void *) = atomic_load(&info->fn);
        if (fn != NULL)
            return (uint64_t)fn(atomic_load(&info->fn_arg));
    }
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
    pthread_mutex_lock(&reg_lock);
    uint32_t n = ninfos;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

const pt_stat_info_t *pt_stats_info(pt_stat_t id)
{
    pthread_mutex_lock(&reg_lock);
    const pt_stat_info_t *i = id > 0 && id < ninfos ? info_at(id) : NULL;
    pthread_mutex_unlock(&reg_lock);
    return i;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(info_at(*(const pt_stat_t *)a)->name, info_at(*(const pt_stat_t *)b)->name);
}

pt_stat_t *pt_stats_sorted(uint32_t *count)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = ninfos - 1;
    pt_stat_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    if (ids != NULL) {
        for (uint32_t i = 0; i < n; i++)
            ids[i] = i + 1;
        qsort(ids, n, sizeof(*ids), cmp_by_name);
    }
    pthread_mutex_unlock(&reg_lock);
    *count = ids ? n : 0;
    return ids;
}
