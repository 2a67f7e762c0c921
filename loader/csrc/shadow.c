/*
 * Shadow variables (hotpatch.h): a patch attaches new fields to objects
 * that existed before it, by the object's address, instead of changing a
 * struct's layout (which objects already in memory would not have).
 * kpatch's shadow variables are the model.
 *
 * A hash table of (object, id) -> zeroed block, guarded by striped mutexes:
 * patch code calls these from many threads, on hot paths. Nothing here runs
 * while threads are stopped; the switch never touches it.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hotpatch.h"
#include "hp_internal.h"

#define BUCKETS 4096 /* power of two */
#define STRIPES 64   /* divides BUCKETS */

struct shadow {
    struct shadow *next;
    const void *obj;
    unsigned long id;
    _Alignas(16) unsigned char data[];
};

static struct shadow *g_bucket[BUCKETS];
static pthread_mutex_t g_stripe[STRIPES];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_ready; /* the stripes were initialised (read after fork) */

static void init_stripes(void)
{
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&g_stripe[i], NULL);
    g_ready = 1;
}

static size_t bucket_of(const void *obj, unsigned long id)
{
    uint64_t h = ((uint64_t)(uintptr_t)obj ^ ((uint64_t)id * 0x9e3779b97f4a7c15ull)) *
                 0xff51afd7ed558ccdull;
    return (size_t)(h >> 40) & (BUCKETS - 1);
}

static pthread_mutex_t *lock_of(size_t bucket)
{
    pthread_once(&g_once, init_stripes);
    return &g_stripe[bucket % STRIPES];
}

/* The entry in bucket b, or NULL; with its predecessor link. */
static struct shadow **find(size_t b, const void *obj, unsigned long id)
{
    struct shadow **pp = &g_bucket[b];
    while (*pp && ((*pp)->obj != obj || (*pp)->id != id))
        pp = &(*pp)->next;
    return pp;
}

HP_API void *hotpatch_shadow_get(const void *obj, unsigned long id)
{
    size_t b = bucket_of(obj, id);
    pthread_mutex_t *m = lock_of(b);
    pthread_mutex_lock(m);
    struct shadow *s = *find(b, obj, id);
    pthread_mutex_unlock(m);
    return s ? s->data : NULL;
}

HP_API void *hotpatch_shadow_get_or_alloc(const void *obj, unsigned long id, size_t size)
{
    size_t b = bucket_of(obj, id);
    pthread_mutex_t *m = lock_of(b);
    pthread_mutex_lock(m);
    struct shadow *s = *find(b, obj, id);
    if (!s && size <= SIZE_MAX - sizeof *s && (s = calloc(1, sizeof *s + size))) {
        s->obj = obj;
        s->id = id;
        s->next = g_bucket[b];
        g_bucket[b] = s;
    }
    pthread_mutex_unlock(m);
    return s ? s->data : NULL;
}

HP_API void hotpatch_shadow_free(const void *obj, unsigned long id)
{
    size_t b = bucket_of(obj, id);
    pthread_mutex_t *m = lock_of(b);
    pthread_mutex_lock(m);
    struct shadow **pp = find(b, obj, id), *s = *pp;
    if (s)
        *pp = s->next;
    pthread_mutex_unlock(m);
    free(s);
}

HP_API size_t hotpatch_shadow_free_all(unsigned long id)
{
    size_t freed = 0;
    for (size_t b = 0; b < BUCKETS; b++) {
        pthread_mutex_t *m = lock_of(b);
        pthread_mutex_lock(m);
        for (struct shadow **pp = &g_bucket[b]; *pp;) {
            struct shadow *s = *pp;
            if (s->id != id) {
                pp = &s->next;
                continue;
            }
            *pp = s->next;
            free(s);
            freed++;
        }
        pthread_mutex_unlock(m);
    }
    return freed;
}

void hp_shadow_after_fork(void)
{
    /* Another thread may have held a stripe at fork: the child starts with
     * every stripe free (the table itself is the parent's, copied). */
    if (g_ready)
        init_stripes();
}
