"""Operations: which dshared segments exist, who has them attached, and
plain-Python copies of shared containers (for json and friends).

Who is attached is read from /proc: every attached handle maps the segment
(/proc/<pid>/maps) and holds a shared flock on it (/proc/locks). Another
user's processes appear in /proc/locks, but their maps are readable by root
only, so a process of another user that has a segment mapped but no longer
open shows up only for root.
"""

import fnmatch
import os
import stat as _stat

from dshared._errors import CorruptSegmentError

__all__ = ["segments", "attached_pids", "to_python", "SHM_DIR"]

SHM_DIR = "/dev/shm"
TEMP_TAG = ".dsh-new-"              # temporary names: "." + name + TEMP_TAG + 16 hex digits
MAGIC = (0x3144455241485344).to_bytes(8, "little")   # the first 8 bytes of every segment


# -- /proc ----------------------------------------------------------------------

def _file_id(st):
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def _scan_maps():
    """{(major, minor, inode): pids} for every file under /dev/shm mapped
    by a process whose maps this process may read."""
    found = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open("/proc/%d/maps" % pid, "rb") as f:
                data = f.read()
        except OSError:
            continue                # gone, or another user's (root reads all)
        for line in data.split(b"\n"):
            if b" /dev/shm/" not in line:
                continue
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            try:
                major, minor = (int(x, 16) for x in parts[3].split(b":"))
                key = (major, minor, int(parts[4]))
            except ValueError:
                continue
            found.setdefault(key, set()).add(pid)
    return found


def _scan_locks():
    """{(major, minor, inode): pids} of the flocks in /proc/locks whose
    process is alive (a lock outlives its taker in a forked child that
    shares the file description; that child is found in the maps)."""
    found = {}
    try:
        with open("/proc/locks", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if b"FLOCK" not in parts or b"->" in parts:
            continue                # not a flock, or a waiter
        i = parts.index(b"FLOCK")
        try:
            pid = int(parts[i + 3])
            major, minor, ino = parts[i + 4].split(b":")
            key = (int(major, 16), int(minor, 16), int(ino))
        except (IndexError, ValueError):
            continue
        if pid > 0 and os.path.exists("/proc/%d" % pid):
            found.setdefault(key, set()).add(pid)
    return found


class _Proc:
    """One scan of /proc, shared by every segment a call looks at."""

    def __init__(self):
        self.maps = _scan_maps()
        self.locks = _scan_locks()

    def pids(self, st):
        key = _file_id(st)
        return sorted(self.maps.get(key, set()) | self.locks.get(key, set()))


def attached_pids(fd_or_path):
    """The PIDs that have the file (an open descriptor or a path) mapped or
    flocked: every process attached to a segment, as far as this process
    may see (see the module's docstring)."""
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return _Proc().pids(st)


def process_command(pid):
    """The command line of process `pid` ('' if it cannot be read)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().rstrip(b"\0").replace(b"\0", b" ")
        if not cmd:
            with open("/proc/%d/comm" % pid, "rb") as f:
                cmd = b"[" + f.read().strip() + b"]"
        return cmd.decode("utf-8", "replace")
    except OSError:
        return ""


# -- segments() -------------------------------------------------------------------

def _temp_of(fname):
    """The segment name a temporary file `.<name>.dsh-new-<16 hex>` is
    building, or None if fname is not such a name."""
    if not fname.startswith("."):
        return None
    head, sep, tail = fname[1:].rpartition(TEMP_TAG)
    if not sep or not head or len(tail) != 16 or any(c not in "0123456789abcdef" for c in tail):
        return None
    return head


def _read_magic(path):
    """(stat, the first 8 bytes) of a regular file, or None if it is not
    one or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            return None
        return st, os.pread(fd, 8, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def _owner(uid):
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _open_handle(name, allow_unsafe):
    """(segment, close_after): this process's own handle of `name` if it has
    one open, else a new one."""
    from dshared import _heap
    seg = _heap._attached.get(name)
    if seg is not None and not seg.closed:
        return seg, False
    return _heap.Segment(name, create=False, allow_unsafe=allow_unsafe), True


def _describe(fname, st, magic, proc, allow_unsafe):
    info = {
        "name": fname,
        "uid": st.st_uid,
        "owner": _owner(st.st_uid),
        "mode": "%o" % _stat.S_IMODE(st.st_mode),
        "capacity": st.st_size,
        "used": None,
        "reserved": None,
        "backed": st.st_blocks * 512,
        "collections": None,
        "attached": 0,
        "pids": [],
        "repairs": None,
        "state": "ok",
        "problem": None,
    }
    pids = proc.pids(st)
    info["pids"] = pids
    info["attached"] = len(pids)
    building = _temp_of(fname)
    if building is not None:
        info["state"] = "half-created"
        info["problem"] = (("being created by pid %s" % ", ".join(map(str, pids))) if pids else
                           "left by a creator of %r that died; the next creation of %r, or "
                           "dshared.unlink(%r), removes it" % (building, building, building))
        return info
    try:
        seg, close_after = _open_handle(fname, allow_unsafe)
    except FileNotFoundError:
        return None                 # removed meanwhile
    except PermissionError as e:
        info["state"] = "foreign"
        info["problem"] = str(e)
        return info
    except (CorruptSegmentError, OSError, ValueError) as e:
        info["state"] = "not-a-segment"
        info["problem"] = str(e)
        return info
    try:
        s = seg.stats()
        info.update(capacity=s["capacity"], used=s["used"], reserved=s["reserved"], repairs=s["repairs"])
        if seg.poisoned:
            info["state"] = "poisoned"
            info["problem"] = "marked corrupt by a failed repair: every access raises CorruptSegmentError"
        else:
            try:
                info["collections"] = len(seg.collections())
            except CorruptSegmentError as e:
                info["state"] = "not-a-segment"
                info["problem"] = str(e)
    finally:
        if close_after:
            try:
                seg.close()
            except RuntimeError:
                pass                # this thread holds its lock: the handle goes with the GC
    return info


def segments(pattern=None, *, allow_unsafe=False):
    """The dshared segments in /dev/shm (and what dead or working creators
    left there): a list of dicts sorted by name, with `name`, `uid`, `owner`,
    `mode`, `capacity`, `used`, `reserved` (bytes the segment says are
    backed), `backed` (bytes the file holds: st_blocks * 512), `collections`
    (the number of named collections), `attached` (how many processes have it
    mapped or open, as far as this process may see) and their `pids`,
    `repairs`, `state` and `problem` (None, or why the state is not "ok").

    `state` is "ok", "poisoned" (a failed repair marked it corrupt),
    "half-created" (a temporary file `.<name>.dsh-new-*` of a creation under
    way or of a creator that died), "not-a-segment" (it has dshared's magic
    but cannot be used: truncated, another format version or platform, a
    damaged header) or "foreign" (another user's, or open to other users:
    counters are read only with allow_unsafe=True). Files without dshared's
    magic are not listed, nor files this process cannot read.

    `pattern` (a shell-style pattern such as "cache-*") keeps the names that
    match it; reading a segment attaches to it for a moment."""
    try:
        names = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    proc = None
    out = []
    for fname in names:
        building = _temp_of(fname)
        if pattern is not None and not fnmatch.fnmatchcase(fname if building is None else building, pattern):
            continue
        if building is None and fname.startswith("."):
            continue
        got = _read_magic(os.path.join(SHM_DIR, fname))
        if got is None:
            continue
        st, magic = got
        if building is None and magic != MAGIC:
            continue
        if proc is None:
            proc = _Proc()          # before attaching: our own handle is not counted
        info = _describe(fname, st, magic, proc, allow_unsafe)
        if info is not None:
            out.append(info)
    return out


# -- to_python ----------------------------------------------------------------------

def to_python(obj):
    """A plain-Python deep copy of `obj`: SharedDict -> dict, SharedList ->
    list, and plain dicts, lists and tuples holding views copied with their
    views converted (bytes, tuples and cycles inside them are kept); None,
    bool, int, float and str come back as they are. Anything else, bytes
    included, raises TypeError, so that it serves as json's `default`::

        json.dumps(shm, default=dshared.to_python)

    (json calls `default` only for what it cannot write itself: a view is
    converted, bytes fail with a TypeError that says so.)"""
    from dshared._collections import SharedDict, SharedList
    if isinstance(obj, (SharedDict, SharedList)) or getattr(obj, "_dshared_view", False):  # Redis views too
        return obj.to_python()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (dict, list, tuple)):
        return _convert(obj, {}, SharedDict, SharedList)
    if isinstance(obj, (bytes, bytearray)):
        raise TypeError("Object of type %s is not JSON serializable (dshared.to_python converts "
                        "shared containers; encode bytes yourself, e.g. with base64)" % type(obj).__name__)
    raise TypeError("Object of type %s is not JSON serializable (dshared.to_python converts only "
                    "shared containers and plain containers holding them)" % type(obj).__name__)


def _convert(obj, memo, SharedDict, SharedList):
    if isinstance(obj, (SharedDict, SharedList)):
        return obj.to_python()
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    done = memo.get(id(obj))
    if done is not None:
        return done
    if isinstance(obj, dict):
        new = memo[id(obj)] = {}
        for k, v in obj.items():
            new[_convert(k, memo, SharedDict, SharedList)] = _convert(v, memo, SharedDict, SharedList)
        return new
    if isinstance(obj, list):
        new = memo[id(obj)] = []
        new.extend(_convert(v, memo, SharedDict, SharedList) for v in obj)
        return new
    return tuple(_convert(v, memo, SharedDict, SharedList) for v in obj)
