/* The few C pieces that Cython's own includes do not cover: atomics and
 * fences for the seqlock, unaligned loads, a keyed hash, the robust
 * process-shared mutex, and the DSHARED_DEBUG flag. Everything here is
 * static inline and cannot fail unless it returns an error code. */
#ifndef DSHARED_H
#define DSHARED_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifndef DSHARED_DEBUG
#define DSHARED_DEBUG 0
#endif

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
static inline void ds_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
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

static inline int ds_bitlen64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }

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

/* SipHash-1-3 with a 128-bit key: keyed so that the table layout is the same
 * in every process (unlike Python's hash() of a str) and not predictable by
 * whoever chooses the keys. */
#define DS_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define DS_SIPROUND                                                     \
    do {                                                                \
        v0 += v1; v1 = DS_ROTL(v1, 13); v1 ^= v0; v0 = DS_ROTL(v0, 32); \
        v2 += v3; v3 = DS_ROTL(v3, 16); v3 ^= v2;                       \
        v0 += v3; v3 = DS_ROTL(v3, 21); v3 ^= v0;                       \
        v2 += v1; v1 = DS_ROTL(v1, 17); v1 ^= v2; v2 = DS_ROTL(v2, 32); \
    } while (0)

static inline uint64_t ds_siphash13(uint64_t k0, uint64_t k1, const void *src, size_t len)
{
    const uint8_t *in = (const uint8_t *)src;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t b = ((uint64_t)len) << 56, m;
    const uint8_t *end = in + (len & ~(size_t)7);
    for (; in != end; in += 8) {
        m = ds_ld64(in);
        v3 ^= m; DS_SIPROUND; v0 ^= m;
    }
    switch (len & 7) {
    case 7: b |= ((uint64_t)in[6]) << 48; /* fall through */
    case 6: b |= ((uint64_t)in[5]) << 40; /* fall through */
    case 5: b |= ((uint64_t)in[4]) << 32; /* fall through */
    case 4: b |= ((uint64_t)in[3]) << 24; /* fall through */
    case 3: b |= ((uint64_t)in[2]) << 16; /* fall through */
    case 2: b |= ((uint64_t)in[1]) << 8;  /* fall through */
    case 1: b |= ((uint64_t)in[0]); break;
    case 0: break;
    }
    v3 ^= b; DS_SIPROUND; v0 ^= b;
    v2 ^= 0xff;
    DS_SIPROUND; DS_SIPROUND; DS_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The key hash: a wyhash-style mix (64x64->128 multiply, fold) keyed by the
 * segment's 128-bit seed, so the table layout is the same in every process
 * and not predictable by whoever chooses the keys. About 20 instructions
 * for a short key, against ~100 for SipHash-1-3 (kept above for reference
 * and for check()). */
static inline uint64_t ds_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}
static inline uint64_t ds_ld32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline uint64_t ds_hash(uint64_t k0, uint64_t k1, const void *src, size_t len)
{
    const uint8_t *p = (const uint8_t *)src;
    const uint64_t P0 = 0xa0761d6478bd642fULL, P1 = 0xe7037ed1a0b428dbULL, P2 = 0x8ebc6af09c88c6e3ULL;
    uint64_t seed = k0 ^ ds_mum(k1 ^ P0, (uint64_t)len ^ P1), a, b;
    if (len <= 16) {
        if (len >= 4) {
            a = (ds_ld32(p) << 32) | ds_ld32(p + ((len >> 3) << 2));
            b = (ds_ld32(p + len - 4) << 32) | ds_ld32(p + len - 4 - ((len >> 3) << 2));
        } else if (len > 0) {
            a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = len;
        while (i > 16) {
            seed = ds_mum(ds_ld64(p) ^ P1, ds_ld64(p + 8) ^ seed);
            p += 16;
            i -= 16;
        }
        a = ds_ld64(p + i - 16);
        b = ds_ld64(p + i - 8);
    }
    return ds_mum(P2 ^ len, ds_mum(a ^ P1, b ^ seed));
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
#define DS_STR2(x) #x
#define DS_STR(x) DS_STR2(x)
static inline const char *ds_layout_name(void) { return DS_ARCH "-" DS_LIBC; }
static inline size_t ds_mutex_size(void) { return sizeof(pthread_mutex_t); }

#endif
