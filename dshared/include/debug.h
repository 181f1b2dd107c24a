/* The debug tier. DSHARED_DEBUG is set by the build (setup.py passes the
 * DSHARED_DEBUG environment variable through):
 *
 *   0  release: nothing below is compiled in;
 *   1  assertions: the header and counter invariants are checked after every
 *      commit (Segment._debug_commit);
 *   2  the same, and the full Segment.check() after every write.
 *
 * A failed assertion is a loud fatal error, on purpose: it prints what broke
 * and where, then aborts the process, so that a test run cannot swallow it
 * as an ordinary exception. Debug builds are for dshared's own tests: a
 * segment damaged on purpose (tests/test_bad_bytes.py, test_corruption.py)
 * can stop a debug build where a release build raises CorruptSegmentError. */
#ifndef DSHARED_DEBUG_H
#define DSHARED_DEBUG_H

#include <stdio.h>
#include <stdlib.h>

#ifndef DSHARED_DEBUG
#define DSHARED_DEBUG 0
#endif

static void ds_debug_fail(const char *what, const char *detail, const char *file, int line)
{
    fprintf(stderr, "dshared (DSHARED_DEBUG=%d): invariant broken: %s%s%s [%s:%d]\n", DSHARED_DEBUG, what,
            detail && *detail ? ": " : "", detail ? detail : "", file, line);
    fflush(stderr);
    abort();
}

/* DS_ASSERT(cond, what): at level 1 and above, cond must hold. */
#define DS_ASSERT(cond, what)                                          \
    do {                                                               \
        if (DSHARED_DEBUG >= 1 && !(cond))                             \
            ds_debug_fail((what), #cond, __FILE__, __LINE__);          \
    } while (0)

#endif
