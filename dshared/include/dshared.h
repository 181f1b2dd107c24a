/* The few C pieces that Cython's own includes do not cover: atomics and
 * fences for the seqlock, unaligned loads, a keyed hash, the robust
 * process-shared mutex, and the debug tier (debug.h). Everything here is
 * static inline and cannot fail unless it returns an error code. */
#ifndef DSHARED_H
#define DSHARED_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "debug.h"

/* Unaligned-safe loads and stores: compile to one mov on x86-64. */
static inline uint64_t ds_ld64(const void *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void ds_st64(void *p, uint64_t v) { memcpy(p, &v, 8); }

/* Seqlock and publish primitives. */
static inline uint64_t ds_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t ds_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void ds_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void ds_atomic_or64(uint64_t *p, uint64_t v) { __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline void ds_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void ds_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void ds_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A hint to start loading the cache lines of [p, p + n); never faults. */
static inline void ds_prefetch(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + n;
    for (; a < end; a += 64) __builtin_prefetch((const void *)a, 0, 3);
}

/* Map the pages of [p, p + n) of the segment into this process's page
 * tables now, in one call, instead of one fault per page on first touch
 * (MADV_POPULATE_WRITE, Linux 5.14). Only a hint: the pages must already be
 * backed (fallocate), and any error (an older kernel, a truncated file) is
 * ignored; the first touch then faults them in as before. */
static inline void ds_populate(void *p, size_t n) {
#ifdef __linux__
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
    if (n) (void)madvise((void *)a, (uintptr_t)p + n - a, 23 /* MADV_POPULATE_WRITE */);
#endif
}

static inline int ds_bitlen64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

/* Whether the double f is a whole number in int64's range (-2**63 <= f <
 * 2**63), and then that number in *out: the canonical form of such a float
 * key is the int (1.0 == 1). NaN is not. The one place this bound is written. */
static inline int ds_double_int64(double f, int64_t *out)
{
    if (f >= -9223372036854775808.0 && f < 9223372036854775808.0 && f == (double)(int64_t)f) {
        *out = (int64_t)f;
        return 1;
    }
    return 0;
}

/* The bytes a big int key is stored and compared as (little-endian two's
 * complement, bit_length // 8 + 1 bytes: Python's int.to_bytes(v, (v.bit_length()
 * + 8) // 8, "little", signed=True)), for the value of a whole, finite double
 * of magnitude 2**63 or more. out must hold DS_WHOLE_DOUBLE_MAX bytes; returns
 * the length. Plain C: a key compare under the segment lock runs no Python. */
#define DS_WHOLE_DOUBLE_MAX 136
static inline size_t ds_whole_double_bytes(double f, uint8_t *out)
{
    int exp;
    double frac = frexp(f < 0 ? -f : f, &exp);     /* |f| = frac * 2**exp, exp >= 64 */
    uint64_t m = (uint64_t)ldexp(frac, 53);         /* 53-bit mantissa: |f| = m << (exp - 53) */
    size_t n = (size_t)exp / 8 + 1, i, at;
    unsigned shift = (unsigned)(exp - 53);
    uint64_t w;
    unsigned carry;
    memset(out, 0, n);
    w = m << (shift % 8);                           /* < 2**60 */
    for (i = 0, at = shift / 8; i < 8 && at < n; i++, at++)
        out[at] = (uint8_t)(w >> (8 * i));
    if (f < 0) {                                    /* two's complement over n bytes */
        carry = 1;
        for (i = 0; i < n; i++) {
            unsigned b = (unsigned)(uint8_t)~out[i] + carry;
            out[i] = (uint8_t)b;
            carry = b >> 8;
        }
    }
    return n;
}
static inline int ds_ctz64(uint64_t v) { return __builtin_ctzll(v); }

/* The key hash: SipHash-1-3 (the variant CPython uses for str and bytes,
 * PEP 456), a pseudo-random function keyed by the segment's 128-bit secret
 * seed (os.urandom at creation). Every process computes the same table
 * layout, and whoever chooses the keys cannot make them collide without the
 * seed: a multiply-mix (wyhash and the like) has seed-independent collision
 * families, a PRF has none. The input is the key's canonical form followed
 * by one byte, its canonical tag, so keys of different types never share
 * an input. */
#define DS_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define DS_SIPROUND                                                     \
    do {                                                                \
        v0 += v1; v1 = DS_ROTL(v1, 13); v1 ^= v0; v0 = DS_ROTL(v0, 32); \
        v2 += v3; v3 = DS_ROTL(v3, 16); v3 ^= v2;                       \
        v0 += v3; v3 = DS_ROTL(v3, 21); v3 ^= v0;                       \
        v2 += v1; v1 = DS_ROTL(v1, 17); v1 ^= v2; v2 = DS_ROTL(v2, 32); \
    } while (0)
#define DS_SIPINIT(k0, k1)                                                          \
    uint64_t v0 = (k0) ^ 0x736f6d6570736575ULL, v1 = (k1) ^ 0x646f72616e646f6dULL; \
    uint64_t v2 = (k0) ^ 0x6c7967656e657261ULL, v3 = (k1) ^ 0x7465646279746573ULL
#define DS_SIPFINISH(b)                                   \
    do {                                                  \
        v3 ^= (b); DS_SIPROUND; v0 ^= (b);                \
        v2 ^= 0xff; DS_SIPROUND; DS_SIPROUND; DS_SIPROUND; \
    } while (0)

static inline uint64_t ds_ld32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* The last t = len & 7 bytes of a len-byte input, which end at p + t, as the
 * low bytes of a word: with overlapping loads, no byte loop. */
static inline uint64_t ds_tail(const uint8_t *p, size_t t, size_t len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    uint64_t m = 0;
    while (t--)
        m |= (uint64_t)p[t] << (8 * t);
    return m;
#else
    if (t == 0)
        return 0;
    if (len >= 8)                       /* the 8 bytes ending at p + t are in the input */
        return ds_ld64(p + t - 8) >> (64 - 8 * t);
    if (t >= 4)
        return (uint64_t)ds_ld32(p) | ((uint64_t)ds_ld32(p + t - 4) << (8 * (t - 4)));
    return (uint64_t)p[0] | ((uint64_t)p[t >> 1] << (8 * (t >> 1))) | ((uint64_t)p[t - 1] << (8 * (t - 1)));
#endif
}

/* The key hash: SipHash-1-3 of src[0..len) followed by the byte tag, without
 * copying the input. A key of up to 6 bytes costs 4 rounds, up to 14 bytes 5,
 * up to 22 bytes 6. */
static inline __attribute__((always_inline)) uint64_t
ds_hash(uint64_t k0, uint64_t k1, unsigned tag, const void *src, size_t len)
{
    const uint8_t *in = (const uint8_t *)src, *end = in + (len & ~(size_t)7);
    size_t t = len & 7;
    uint64_t m;
    DS_SIPINIT(k0, k1);
    for (; in != end; in += 8) {
        m = ds_ld64(in);
        v3 ^= m; DS_SIPROUND; v0 ^= m;
    }
    m = ds_tail(in, t, len) | ((uint64_t)(tag & 0xff) << (8 * t));
    if (t == 7) {                       /* the tag completes a word */
        v3 ^= m; DS_SIPROUND; v0 ^= m;
        m = 0;
    }
    DS_SIPFINISH((((uint64_t)(len + 1)) << 56) | m);
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ds_hash of the 8 bytes of v in memory order (an int or float key): one
 * word and the final block, 5 rounds. */
static inline uint64_t ds_hash_u64(uint64_t k0, uint64_t k1, unsigned tag, uint64_t v)
{
    DS_SIPINIT(k0, k1);
    v3 ^= v; DS_SIPROUND; v0 ^= v;
    DS_SIPFINISH((((uint64_t)9) << 56) | (uint64_t)(tag & 0xff));
    return v0 ^ v1 ^ v2 ^ v3;
}
/* The segment's mutex: process-shared, robust (a dead owner gives the next
 * locker EOWNERDEAD instead of a deadlock) and error-checking (re-entry by
 * the owning thread gives EDEADLK instead of a hang). */
static inline int ds_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc) return rc;
    if (!rc) rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc) rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (!rc) rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* Wait at most `ms` milliseconds; returns 0, EOWNERDEAD, ETIMEDOUT or an error. */
static inline int ds_mutex_lock_ms(pthread_mutex_t *m, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
    int rc;
    do { rc = pthread_mutex_timedlock(m, &ts); } while (rc == EINTR);
    return rc;
}

/* The kernel thread id that owns the mutex, from glibc's futex word (a robust
 * mutex keeps the owner's TID there; a dead owner's TID is cleared and
 * FUTEX_OWNER_DIED set). -1 where the layout is not known. */
#include <sys/syscall.h>
#include <unistd.h>
static inline long ds_gettid(void) { return (long)syscall(SYS_gettid); }
static inline long ds_mutex_owner(pthread_mutex_t *m)
{
#if defined(__GLIBC__)
    return (long)(__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) & 0x3fffffff);
#else
    (void)m;
    return -1;
#endif
}

/* 1 when the mutex is of the kind ds_mutex_init makes (robust, process-shared,
 * error-checking), as far as the layout is known: a zeroed or overwritten one
 * would lock as a plain mutex, whose owner is not recorded. */
static inline int ds_mutex_kind_ok(pthread_mutex_t *m)
{
#if defined(__GLIBC__)
    static int want = -1;
    if (want == -1) {
        pthread_mutex_t ref;
        if (ds_mutex_init(&ref)) return 0;
        want = ref.__data.__kind;
        pthread_mutex_destroy(&ref);
    }
    return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) == want;
#else
    (void)m;
    return 1;
#endif
}

static inline int ds_mutex_trylock(pthread_mutex_t *m) { return pthread_mutex_trylock(m); }
static inline int ds_mutex_unlock(pthread_mutex_t *m) { return pthread_mutex_unlock(m); }
static inline int ds_mutex_consistent(pthread_mutex_t *m) { return pthread_mutex_consistent(m); }

/* The layout descriptor: a segment made by another ABI must not be attached. */
#if defined(__x86_64__)
#define DS_ARCH "x86_64"
#elif defined(__aarch64__)
#define DS_ARCH "aarch64"
#else
#define DS_ARCH "other"
#endif
#if defined(__GLIBC__)
#define DS_LIBC "glibc"
#else
#define DS_LIBC "libc"
#endif
static inline const char *ds_layout_name(void) { return DS_ARCH "-" DS_LIBC; }
static inline size_t ds_mutex_size(void) { return sizeof(pthread_mutex_t); }

#endif
