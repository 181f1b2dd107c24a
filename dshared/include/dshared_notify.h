/* Change notifications: the wait area of a segment (futex words) and the
 * few system calls around it. Everything is static inline.
 *
 * The wait area is the payload of one bytes block, referenced from
 * Header.waits and allocated on first use (version(), wait()); its bytes,
 * from the first 64-byte boundary of the payload:
 *
 *   line 0                 magic, nwaiters (all registered waiters), repairer
 *   lines 1 .. NB          one bucket per cache line: seq (the futex word), waiters
 *   NREC records of 8 bytes: pid << 32 | busy << 17 | bucket << 1 | counted (0: free;
 *                          see ds_nt_claim)
 *
 * A write notes the buckets of what it changed (ds_nt_note: the container's
 * bucket, and the bucket of container + key for a dict key), bumps their
 * seq once the write is published (ds_nt_bump, under the lock) and, after
 * the lock's release, wakes the buckets that have waiters (ds_nt_wake):
 * with nobody waiting that is one load and a branch. A waiter registers
 * (bucket.waiters++, then nwaiters++, seq_cst), reads seq again and
 * FUTEX_WAITs on it: the kernel refuses to sleep if seq moved, and the
 * writer's store of seq, the full barrier of the unlock and its load of
 * the counts order against the waiter's increments (Dekker), so either the
 * waiter sees the new seq or the writer sees the waiter. Never
 * FUTEX_PRIVATE_FLAG: the words are shared between processes.
 *
 * Records let a check find the counts of waiters that died, and make them
 * exact again (see ds_nt_claim). A count too high costs a wasted
 * FUTEX_WAKE; too low never happens. */
#ifndef DSHARED_NOTIFY_H
#define DSHARED_NOTIFY_H

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#define DS_NT_MAGIC 0x31544941575344ULL     /* "DSWAIT1" */
#define DS_NT_BUCKETS 512
#define DS_NT_RECORDS 2048
#define DS_NT_PEND 32                       /* buckets one write notes before it bumps them all */
#define DS_NT_BYTES (64 + 64 * DS_NT_BUCKETS + 8 * DS_NT_RECORDS)
#define DS_NT_WAITV_MAX 128

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

typedef struct {
    uint64_t magic;
    uint32_t nwaiters;
    uint32_t repairer;                      /* pid of the check() recounting, or 0 (ds_nt_repair_scan) */
} ds_nt_head;

typedef struct {
    uint32_t seq;
    uint32_t waiters;
} ds_nt_bucket;

/* What one write (or one lock() block) changed: bucket numbers. */
typedef struct {
    uint32_t n, done, all;                  /* all: 1 bump every bucket, 2 bumped */
    uint16_t b[DS_NT_PEND];
} ds_nt_pend;

/* Test hooks: no wake (meta-test of the lost wake-up test), count of wake calls. */
static int ds_nt_hook_no_wake = 0;
static uint64_t ds_nt_wake_calls = 0;

static inline ds_nt_head *ds_nt_headp(char *area) { return (ds_nt_head *)area; }
static inline ds_nt_bucket *ds_nt_bk(char *area, unsigned b) { return (ds_nt_bucket *)(area + 64 + 64 * (size_t)b); }
static inline uint64_t *ds_nt_rec(char *area, unsigned i) { return (uint64_t *)(area + 64 + 64 * DS_NT_BUCKETS + 8 * (size_t)i); }

static inline uint64_t ds_nt_mix(uint64_t x) {
    x ^= x >> 31; x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27; x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}
static inline unsigned ds_nt_bucket_c(uint64_t c) { return (unsigned)(ds_nt_mix(c) % DS_NT_BUCKETS); }
static inline unsigned ds_nt_bucket_k(uint64_t c, uint64_t h) {
    return (unsigned)(ds_nt_mix(c ^ (h * 0x9e3779b97f4a7c15ULL) ^ 0x5bd1e995ULL) % DS_NT_BUCKETS);
}

static inline uint32_t ds_nt_seq(char *area, unsigned b) { return __atomic_load_n(&ds_nt_bk(area, b)->seq, __ATOMIC_ACQUIRE); }

static inline void ds_nt_note(ds_nt_pend *p, unsigned b) {
    uint32_t i;
    for (i = p->n; i > 0; i--)
        if (p->b[i - 1] == b) {
            if (i > p->done) return;        /* noted and not bumped yet */
            break;
        }
    if (p->n >= DS_NT_PEND) { p->all = 1; return; }
    p->b[p->n++] = (uint16_t)b;
}

/* Under the lock, once the write is published: bump what it noted. */
static inline void ds_nt_bump(char *area, ds_nt_pend *p) {
    uint32_t i;
    ds_nt_bucket *k;
    if (p->all == 1) {
        for (i = 0; i < DS_NT_BUCKETS; i++) {
            k = ds_nt_bk(area, i);
            __atomic_store_n(&k->seq, k->seq + 1, __ATOMIC_RELEASE);
        }
        p->all = 2;
        p->done = p->n;
        return;
    }
    for (i = p->done; i < p->n; i++) {
        k = ds_nt_bk(area, p->b[i]);
        __atomic_store_n(&k->seq, k->seq + 1, __ATOMIC_RELEASE);
    }
    p->done = p->n;
}

static inline long ds_nt_futex_wake(uint32_t *w) {
    ds_nt_wake_calls++;
    return syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* After the lock's release (whose atomic exchange is a full barrier on
 * x86-64; elsewhere a fence): wake the noted buckets that have waiters. */
static inline void ds_nt_wake(char *area, ds_nt_pend *p, int unlocked) {
    uint32_t i;
    ds_nt_bucket *k;
#if !(defined(__x86_64__) || defined(__i386__))
    unlocked = 0;
#endif
    if (unlocked)
        __asm__ __volatile__("" ::: "memory");
    else
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ds_nt_headp(area)->nwaiters, __ATOMIC_RELAXED) != 0 && !ds_nt_hook_no_wake) {
        if (p->all) {
            for (i = 0; i < DS_NT_BUCKETS; i++) {
                k = ds_nt_bk(area, i);
                if (__atomic_load_n(&k->waiters, __ATOMIC_RELAXED))
                    ds_nt_futex_wake(&k->seq);
            }
        } else {
            for (i = 0; i < p->n; i++) {
                k = ds_nt_bk(area, p->b[i]);
                if (__atomic_load_n(&k->waiters, __ATOMIC_RELAXED))
                    ds_nt_futex_wake(&k->seq);
            }
        }
    }
    p->n = p->done = p->all = 0;
}

/* Registration, in steps, so that a wait on many words pays one contended
 * increment of nwaiters, not one per word. A record is
 * pid << 32 | bucket << 1 | COUNTED, with BUSY (bit 17) while its process
 * is changing the counts:
 *   ds_nt_claim (per word): a free record takes pid, bucket and BUSY, then
 *     the bucket's count goes up;
 *   ds_nt_count (per segment): nwaiters += k; then ds_nt_mark makes each
 *     record COUNTED (no longer BUSY): both counts hold it.
 * Unregistering: ds_nt_leave makes each record BUSY again, ds_nt_uncount
 * lowers nwaiters, ds_nt_release the bucket's count and frees the record.
 *
 * Repair (ds_nt_repair_scan, in check()) frees the records of dead processes.
 * A dead COUNTED record is in both counts; a dead BUSY one may or may not
 * be, so repair recounts: each bucket's count becomes the number of live
 * COUNTED records in it, nwaiters their total. The recount must not miss a
 * live change, so it holds the area's repairer word (its pid) and every
 * count change waits for that word to be 0 first (ds_nt_settle), after
 * making its record BUSY: the record's seq_cst store and the repairer's
 * seq_cst claim of the word order like Dekker's, so either the change sees
 * the repair and waits, or the repair sees a BUSY record and does not
 * recount (it then only takes the dead COUNTED records out of the counts:
 * too high at worst, a wasted FUTEX_WAKE, never too low). With no live
 * waiter part way, the counts after a repair are exact whatever instant a
 * waiter died at. The repairer never waits on anything, so it holds the
 * word for one pass over the records; a dead repairer's word is cleared by
 * whoever finds it. */
#define DS_NT_COUNTED 1ULL
#define DS_NT_BUSY (1ULL << 17)
static inline unsigned ds_nt_rec_bucket(uint64_t v) { return (unsigned)((v >> 1) & 0xffff); }
static inline int ds_nt_pid_dead(uint32_t pid) {
    return pid != 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Test hooks: a process SIGKILLs itself at step N of (un)registering
 * (1 claimed, 2 bucket counted, 3 nwaiters counted, 4 leaving, 5 nwaiters
 * uncounted, 6 bucket uncounted); no_recount turns the recount off (the
 * meta-test of the killed-at-every-step test). */
static int ds_nt_hook_die_at = 0;
static int ds_nt_hook_no_recount = 0;
static inline void ds_nt_step(int step) {
    if (ds_nt_hook_die_at == step)
        raise(SIGKILL);
}

/* Wait until no repair is recounting (microseconds: one pass over the
 * records). After DS_NT_SETTLE_MS it goes on regardless: the repairer is
 * stopped, or the word is damaged (check() takes it back); a recount then
 * may leave this bucket's count one too low until the next check(), and a
 * waiter in it sees a change at its next slice instead of at once. The word
 * given up on is remembered (per process), and later changes go on at once
 * while the area still holds it: a wait on 128 words pays the bound once,
 * not 128 times on registering and again on leaving. */
#define DS_NT_SETTLE_MS 100
static char *ds_nt_stale_area = NULL;
static uint32_t ds_nt_stale_word = 0;
static uint64_t ds_nt_settle_gave_up = 0;  /* bounds reached in this process (tests) */
static inline void ds_nt_settle(char *area) {
    uint32_t *w = &ds_nt_headp(area)->repairer;
    uint32_t cur;
    struct timespec ts = {0, 20000}, t0, t1;
    int started = 0;
    while ((cur = __atomic_load_n(w, __ATOMIC_SEQ_CST)) != 0) {
        if (ds_nt_pid_dead(cur)) {
            __atomic_compare_exchange_n(w, &cur, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
            continue;
        }
        if (area == ds_nt_stale_area && cur == ds_nt_stale_word)
            return;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!started) {
            t0 = t1;
            started = 1;
        } else if ((t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L >= DS_NT_SETTLE_MS) {
            ds_nt_stale_area = area;
            ds_nt_stale_word = cur;
            ds_nt_settle_gave_up++;
            return;
        }
        nanosleep(&ts, NULL);
    }
}

/* Returns the record, or -1 when the table is full (the waiter then polls). */
static inline int ds_nt_claim(char *area, unsigned b, uint32_t pid) {
    unsigned i, start = (unsigned)(ds_nt_mix(((uint64_t)pid << 16) ^ b ^ (uint64_t)(uintptr_t)&i) % DS_NT_RECORDS);
    uint64_t zero, mine = ((uint64_t)pid << 32) | ((uint64_t)b << 1) | DS_NT_BUSY;
    for (i = 0; i < DS_NT_RECORDS; i++) {
        unsigned r = (start + i) % DS_NT_RECORDS;
        uint64_t *rec = ds_nt_rec(area, r);
        zero = 0;
        if (__atomic_load_n(rec, __ATOMIC_RELAXED) == 0
                && __atomic_compare_exchange_n(rec, &zero, mine, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            ds_nt_step(1);
            ds_nt_settle(area);
            __atomic_fetch_add(&ds_nt_bk(area, b)->waiters, 1, __ATOMIC_SEQ_CST);
            ds_nt_step(2);
            return (int)r;
        }
    }
    return -1;
}

static inline void ds_nt_count(char *area, uint32_t k) {
    __atomic_fetch_add(&ds_nt_headp(area)->nwaiters, k, __ATOMIC_SEQ_CST);
    ds_nt_step(3);
}

static inline void ds_nt_mark(char *area, int r) {
    uint64_t *rec;
    if (r >= 0) {
        rec = ds_nt_rec(area, (unsigned)r);
        __atomic_store_n(rec, (__atomic_load_n(rec, __ATOMIC_RELAXED) & ~DS_NT_BUSY) | DS_NT_COUNTED,
                         __ATOMIC_RELEASE);
    }
}

static inline void ds_nt_leave(char *area, int r) {
    if (r >= 0) {
        __atomic_fetch_or(ds_nt_rec(area, (unsigned)r), DS_NT_BUSY, __ATOMIC_SEQ_CST);
        ds_nt_settle(area);
        ds_nt_step(4);
    }
}

static inline void ds_nt_uncount(char *area, uint32_t k) {
    __atomic_fetch_sub(&ds_nt_headp(area)->nwaiters, k, __ATOMIC_SEQ_CST);
    ds_nt_step(5);
}

static inline void ds_nt_release(char *area, int r, unsigned b) {
    if (r >= 0) {
        __atomic_fetch_sub(&ds_nt_bk(area, b)->waiters, 1, __ATOMIC_SEQ_CST);
        ds_nt_step(6);
        __atomic_store_n(ds_nt_rec(area, (unsigned)r), 0, __ATOMIC_RELEASE);
    }
}

/* Wait while bucket b's seq is `val`, for at most ms milliseconds: 0 when
 * woken (or the word moved), else an errno (ETIMEDOUT, EINTR, EAGAIN). */
static inline int ds_nt_wait1(char *area, unsigned b, uint32_t val, long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    if (syscall(SYS_futex, &ds_nt_bk(area, b)->seq, FUTEX_WAIT, val, &ts, NULL, 0) == 0)
        return 0;
    return errno;
}

struct ds_futex_waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

/* Wait on up to DS_NT_WAITV_MAX words at once (futex_waitv, Linux 5.16):
 * 0 when woken or a word moved, else an errno (ENOSYS without futex_waitv). */
static inline int ds_nt_waitv_addrs(uint32_t **addrs, const uint32_t *vals, unsigned n, long ms) {
    struct ds_futex_waitv w[DS_NT_WAITV_MAX];
    struct timespec ts;
    unsigned i;
    if (n > DS_NT_WAITV_MAX)
        n = DS_NT_WAITV_MAX;
    for (i = 0; i < n; i++) {
        w[i].val = vals[i];
        w[i].uaddr = (uint64_t)(uintptr_t)addrs[i];
        w[i].flags = FUTEX2_SIZE_U32;       /* shared: no FUTEX2_PRIVATE */
        w[i].reserved = 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
    if (syscall(SYS_futex_waitv, w, n, 0, &ts, CLOCK_MONOTONIC) >= 0)
        return 0;
    return errno;
}

/* A repair in two steps, so that check() can compare the counts with the
 * records between them, while no count changes:
 *   ds_nt_repair_scan takes the repairer word, frees the records of dead
 *     processes and tallies the rest: per bucket the live COUNTED records
 *     (cnt) and the dead ones just freed (gone); busy when a live record
 *     is part way (then the counts may be changing);
 *   ds_nt_repair_apply recounts (not busy: each count becomes its live
 *     records), or else takes only the dead COUNTED records out of the
 *     counts; then frees the word.
 * Called under the segment's lock only (check()), so a repairer word found
 * set is stale: its repair died in the pass, or the word was damaged. */
typedef struct {
    uint32_t cnt[DS_NT_BUCKETS], gone[DS_NT_BUCKETS];
    uint32_t total, ngone;
    int busy;
    long fixed;                     /* records freed */
} ds_nt_tally;

static inline void ds_nt_repair_scan(char *area, ds_nt_tally *t) {
    unsigned i, b;
    memset(t, 0, sizeof *t);
    __atomic_exchange_n(&ds_nt_headp(area)->repairer, (uint32_t)getpid(), __ATOMIC_SEQ_CST);
    for (i = 0; i < DS_NT_RECORDS; i++) {
        uint64_t *rec = ds_nt_rec(area, i);
        uint64_t v = __atomic_load_n(rec, __ATOMIC_SEQ_CST);
        if (v == 0)
            continue;
        b = ds_nt_rec_bucket(v);
        if (ds_nt_pid_dead((uint32_t)(v >> 32))) {
            if (!__atomic_compare_exchange_n(rec, &v, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
                continue;
            t->fixed++;
            if ((v & (DS_NT_COUNTED | DS_NT_BUSY)) == DS_NT_COUNTED && b < DS_NT_BUCKETS) {
                t->gone[b]++;
                t->ngone++;
            }
        } else if ((v & (DS_NT_COUNTED | DS_NT_BUSY)) != DS_NT_COUNTED) {
            t->busy = 1;            /* part way: its counts may change under a recount */
        } else if (b < DS_NT_BUCKETS) {
            t->cnt[b]++;
            t->total++;
        }
    }
}

static inline void ds_nt_repair_apply(char *area, ds_nt_tally *t) {
    ds_nt_head *h = ds_nt_headp(area);
    uint32_t *w;
    unsigned b;
    if (!t->busy && !ds_nt_hook_no_recount) {
        for (b = 0; b < DS_NT_BUCKETS; b++) {
            w = &ds_nt_bk(area, b)->waiters;
            if (__atomic_load_n(w, __ATOMIC_RELAXED) != t->cnt[b])
                __atomic_store_n(w, t->cnt[b], __ATOMIC_SEQ_CST);
        }
        if (__atomic_load_n(&h->nwaiters, __ATOMIC_RELAXED) != t->total)
            __atomic_store_n(&h->nwaiters, t->total, __ATOMIC_SEQ_CST);
    } else if (t->ngone) {
        for (b = 0; b < DS_NT_BUCKETS; b++) {
            w = &ds_nt_bk(area, b)->waiters;
            for (; t->gone[b] && __atomic_load_n(w, __ATOMIC_RELAXED) > 0; t->gone[b]--)
                __atomic_fetch_sub(w, 1, __ATOMIC_SEQ_CST);
        }
        for (; t->ngone && __atomic_load_n(&h->nwaiters, __ATOMIC_RELAXED) > 0; t->ngone--)
            __atomic_fetch_sub(&h->nwaiters, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&h->repairer, 0, __ATOMIC_SEQ_CST);
}

#endif
