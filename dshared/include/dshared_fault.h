/* Faults on a segment's mapping (included by _heap only: one table and one
 * handler per process).
 *
 * Another process of the same user can truncate the segment's file; touching
 * a page past the new end of a MAP_SHARED mapping raises SIGBUS, which would
 * kill the process. dshared installs a SIGBUS/SIGSEGV handler (when it maps
 * its first segment) that looks the fault address up in a fixed table of the
 * mappings dshared made. A fault inside one of them is repaired in place:
 * the pages from the faulting one to the end of the mapping are replaced by
 * private zero pages (they are past the end of the file too: a file is
 * truncated from the top), the segment's `faulted` field is set, and the
 * access resumes and reads zeros. dshared turns the field into
 * CorruptSegmentError at its checkpoints (end of a read, start and commit of
 * a write, lock). Every other fault goes to the handler that was installed
 * before (faulthandler's, a plain one, or the default action).
 *
 * The table is read by the handler, so it is only changed with atomic
 * stores: a slot is filled before its base is published, and its base is
 * cleared before the mapping is unmapped. Registration runs with the GIL
 * held, so there is one writer at a time. Nothing here runs on a read path.
 */
#ifndef DSHARED_FAULT_H
#define DSHARED_FAULT_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DS_FAULTED 1            /* a fault hit the mapping: its bytes can no longer be trusted */
#define DS_FAULTED_HEADER 2     /* the header page (and its mutex) was replaced by zeros */
#define DS_FAULT_SLOTS 4096     /* more than the default limit of open files: one fd per segment */

typedef struct {
    uintptr_t base;             /* start of the mapping; 0: a free slot */
    uintptr_t len;
    uintptr_t lo;               /* offset from which the mapping is private zeros (len: none) */
    int fd;                     /* the segment file, to see a truncation (see ds_fault_probe) */
    int *flag;                  /* the Segment's `faulted` field */
} ds_fault_slot;

static ds_fault_slot ds_fault_table[DS_FAULT_SLOTS];
static int ds_fault_nslots;     /* slots in use lie below this */
static int ds_fault_installed;
static uintptr_t ds_fault_pagesize = 4096;
static struct sigaction ds_fault_prev_bus, ds_fault_prev_segv;

/* Replace [from, to) of slot s (offsets, page aligned) with private zero
 * pages; 0 on success. MAP_NORESERVE: a large capacity is no commit charge. */
static int ds_fault_zero(ds_fault_slot *s, uintptr_t base, uintptr_t from, uintptr_t to)
{
    void *p = mmap((void *)(base + from), to - from, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    __atomic_or_fetch(s->flag, DS_FAULTED | (from == 0 ? DS_FAULTED_HEADER : 0), __ATOMIC_SEQ_CST);
    return 0;
}

/* A fault at addr inside a registered mapping: repair it; 1 if it was ours. */
static int ds_fault_fix_addr(uintptr_t addr)
{
    int i, n = __atomic_load_n(&ds_fault_nslots, __ATOMIC_ACQUIRE);
    for (i = 0; i < n; i++) {
        ds_fault_slot *s = &ds_fault_table[i];
        uintptr_t base = __atomic_load_n(&s->base, __ATOMIC_ACQUIRE), off, lo;
        if (base == 0 || addr < base || addr - base >= s->len)
            continue;
        off = (addr - base) & ~(ds_fault_pagesize - 1);
        lo = __atomic_load_n(&s->lo, __ATOMIC_RELAXED);
        if (off < lo && ds_fault_zero(s, base, off, lo) == 0) {
            __atomic_store_n(&s->lo, off, __ATOMIC_RELAXED);
            return 1;
        }
        /* already zeros (another thread repaired it meanwhile), or no room
         * for the whole rest: this page alone */
        return ds_fault_zero(s, base, off, off + ds_fault_pagesize) == 0;
    }
    return 0;
}

/* A SIGBUS this process sent itself: a handler installed above this one
 * (faulthandler enabled after the segment was mapped) saw the fault first,
 * and re-raises it without its address. Repair every registered mapping
 * whose file is now shorter than the mapping; 1 if one was. The access then
 * runs again and succeeds, or faults again and comes here with its address. */
static int ds_fault_probe(void)
{
    int i, n = __atomic_load_n(&ds_fault_nslots, __ATOMIC_ACQUIRE), found = 0;
    struct stat st;
    for (i = 0; i < n; i++) {
        ds_fault_slot *s = &ds_fault_table[i];
        uintptr_t base = __atomic_load_n(&s->base, __ATOMIC_ACQUIRE), from, lo;
        if (base == 0 || fstat(s->fd, &st) != 0 || st.st_size < 0 || (uintptr_t)st.st_size >= s->len)
            continue;
        from = ((uintptr_t)st.st_size + ds_fault_pagesize - 1) & ~(ds_fault_pagesize - 1);
        lo = __atomic_load_n(&s->lo, __ATOMIC_RELAXED);
        if (from < lo && ds_fault_zero(s, base, from, lo) == 0) {
            __atomic_store_n(&s->lo, from, __ATOMIC_RELAXED);
            found = 1;
        }
    }
    return found;
}

/* Not a fault of dshared's: do what would have happened without this handler. */
static void ds_fault_chain(int sig, siginfo_t *info, void *uc)
{
    struct sigaction *prev = sig == SIGBUS ? &ds_fault_prev_bus : &ds_fault_prev_segv;
    struct sigaction dfl;
    if (prev->sa_flags & SA_SIGINFO) {
        if (prev->sa_sigaction != NULL) {
            prev->sa_sigaction(sig, info, uc);
            return;
        }
    } else if (prev->sa_handler == SIG_IGN) {
        if (info->si_code <= 0)
            return;                 /* a signal sent by kill(), ignored as before */
    } else if (prev->sa_handler != SIG_DFL) {
        prev->sa_handler(sig);
        return;
    }
    /* the default action: a fault happens again when the access is retried
     * on return (and kills with the right address and a core); a sent
     * signal is raised again, delivered when this handler returns */
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (info->si_code <= 0)
        raise(sig);
}

static void ds_fault_handler(int sig, siginfo_t *info, void *uc)
{
    int saved = errno;
    int ours = 0;
    if (sig == SIGBUS && (info->si_code == BUS_ADRERR || info->si_code == BUS_OBJERR))
        ours = ds_fault_fix_addr((uintptr_t)info->si_addr);
    else if (sig == SIGSEGV && (info->si_code == SEGV_MAPERR || info->si_code == SEGV_ACCERR))
        ours = ds_fault_fix_addr((uintptr_t)info->si_addr);
    else if (sig == SIGBUS && info->si_code <= 0 && info->si_pid == getpid())
        ours = ds_fault_probe();
    if (!ours)
        ds_fault_chain(sig, info, uc);
    errno = saved;
}

static int ds_fault_install(void)
{
    struct sigaction sa;
    long pg;
    if (ds_fault_installed)
        return 0;
    pg = sysconf(_SC_PAGESIZE);
    if (pg > 0)
        ds_fault_pagesize = (uintptr_t)pg;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = ds_fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;  /* ONSTACK: faulthandler's stack, if any */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &ds_fault_prev_bus) != 0)
        return errno;
    if (sigaction(SIGSEGV, &sa, &ds_fault_prev_segv) != 0) {
        int e = errno;
        sigaction(SIGBUS, &ds_fault_prev_bus, NULL);
        return e;
    }
    ds_fault_installed = 1;
    return 0;
}

/* Register a mapping (installs the handler the first time); 0 or an errno. */
static int ds_fault_register(void *base, size_t len, int fd, int *flag)
{
    int i, rc = ds_fault_install();
    if (rc)
        return rc;
    for (i = 0; i < DS_FAULT_SLOTS; i++) {
        ds_fault_slot *s = &ds_fault_table[i];
        if (__atomic_load_n(&s->base, __ATOMIC_RELAXED) != 0)
            continue;
        s->len = len;
        s->lo = len;
        s->fd = fd;
        s->flag = flag;
        __atomic_store_n(&s->base, (uintptr_t)base, __ATOMIC_RELEASE);
        if (i >= ds_fault_nslots)
            __atomic_store_n(&ds_fault_nslots, i + 1, __ATOMIC_RELEASE);
        return 0;
    }
    return EMFILE;
}

static void ds_fault_unregister(void *base)
{
    int i;
    for (i = 0; i < ds_fault_nslots; i++)
        if (ds_fault_table[i].base == (uintptr_t)base) {
            __atomic_store_n(&ds_fault_table[i].base, 0, __ATOMIC_SEQ_CST);
            return;
        }
}

/* The segment file of a mapping is now open as fd (a forked child reopens it). */
static void ds_fault_set_fd(void *base, int fd)
{
    int i;
    for (i = 0; i < ds_fault_nslots; i++)
        if (ds_fault_table[i].base == (uintptr_t)base)
            __atomic_store_n(&ds_fault_table[i].fd, fd, __ATOMIC_RELAXED);
}

/* The `faulted` field, read again (not cached across the access that set it). */
static inline int ds_fault_flag(const int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }

#endif
