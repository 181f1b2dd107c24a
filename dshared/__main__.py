"""The dshared command line: python -m dshared (or the `dshared` script).

    dshared ls [PATTERN]            the dshared segments in /dev/shm
    dshared stat NAME               counters, named collections, attached processes
    dshared check NAME              verify the whole heap (exit status 1 if not ok)
    dshared dump NAME [KEYPATH]     print the contents (Python repr, or --json)
    dshared get NAME KEYPATH        print one value
    dshared set NAME KEYPATH VALUE  store a JSON value
    dshared collect NAME            free unreachable cycles
    dshared rm NAME                 remove a segment nobody else has attached
    dshared top NAME                a live view of memory, writes/s, repairs
"""

import argparse
import base64
import json
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence

import dshared
from dshared import _codec, _heap, _ops
from dshared._errors import CorruptSegmentError, DsharedError

EXIT_OK = 0
EXIT_NOT_OK = 1     # the thing asked for is not ok: check failed, rm refused, key or segment missing
EXIT_USAGE = 2      # bad usage or input: options, KEYPATH, VALUE, a value JSON cannot hold

EXIT_CODES = """exit status:
  0  ok
  1  what was asked for is not ok: check found problems, rm refused, the
     segment or the key does not exist, the segment cannot be read
  2  bad usage or input: unknown option, bad KEYPATH or VALUE, a value that
     JSON cannot hold (dump/get --json)"""

KEYPATH_HELP = """KEYPATH: where to look inside the segment's root dict (or the named
collection given with -c). Either a JSON array, one element per step:
'["users", 3, "tags"]' (a str or number is a dict key or, on a list, an
index; an inner array is a tuple key: '["pos", [1, 2]]'), or the dotted
short form users.3.tags, where a part made only of digits (with an optional
leading '-') is an int and any other part a str. Keys that contain '.' or
are digits as a str need the JSON form: '["3"]', '["a.b"]'. '[]' is the root."""


class Fail(Exception):
    """A failure to report on stderr with exit status `code`."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


# -- KEYPATH ------------------------------------------------------------------------

def parse_keypath(text):
    """KEYPATH -> a list of keys/indices (see KEYPATH_HELP)."""
    if text.lstrip().startswith("["):
        try:
            path = json.loads(text)
        except ValueError as e:
            raise Fail(EXIT_USAGE, "bad KEYPATH %r: not a JSON array (%s)" % (text, e))
        if not isinstance(path, list):
            raise Fail(EXIT_USAGE, "bad KEYPATH %r: not a JSON array" % text)
        return [_key_from_json(k, text) for k in path]
    if text == "":
        raise Fail(EXIT_USAGE, "empty KEYPATH: use '[]' for the root")
    parts = text.split(".")
    if any(p == "" for p in parts):
        raise Fail(EXIT_USAGE, "bad KEYPATH %r: empty part (use the JSON form for keys with '.')" % text)
    return [int(p) if _INT_PART.match(p) else p for p in parts]


_INT_PART = re.compile(r"-?[0-9]+\Z")


def _key_from_json(k, text):
    if isinstance(k, list):
        return tuple(_key_from_json(x, text) for x in k)
    if isinstance(k, dict):
        raise Fail(EXIT_USAGE, "bad KEYPATH %r: an object cannot be a key" % text)
    return k


def _fmt_path(path):
    return "".join("[%r]" % (k,) for k in path)


def _walk(node, path):
    """The value at `path` under `node`; Fail(1) if a step is missing."""
    for i, k in enumerate(path):
        where = _fmt_path(path[:i + 1])
        if isinstance(node, Mapping):
            try:
                node = node[k]
            except KeyError:
                raise Fail(EXIT_NOT_OK, "no key %s" % where) from None
            except TypeError as e:
                raise Fail(EXIT_USAGE, "bad key %s: %s" % (where, e)) from None
        elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            if isinstance(k, bool) or not isinstance(k, int):
                raise Fail(EXIT_USAGE, "bad index %s: a list index is an int" % where)
            try:
                node = node[k]
            except IndexError:
                raise Fail(EXIT_NOT_OK, "no item %s: index out of range" % where) from None
        else:
            raise Fail(EXIT_NOT_OK, "no key %s: %s is a %s, not a dict or list"
                       % (where, _fmt_path(path[:i]) or "the root", type(node).__name__))
    return node


# -- values as JSON or Python -------------------------------------------------------------

def _bytes_as(b, mode, where):
    if mode == "base64":
        return base64.b64encode(b).decode("ascii")
    if mode == "latin1":
        return b.decode("latin-1")
    if mode == "repr":
        return repr(b)
    raise Fail(EXIT_USAGE, "the value at %s is bytes, which JSON cannot hold; "
               "--bytes=base64|latin1|repr says how to write bytes" % (where or "the root"))


def _json_key(k, mode, path):
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, (bool, int)):
        return json.dumps(k)
    if isinstance(k, float):
        if math.isfinite(k):
            return json.dumps(k)
    elif isinstance(k, bytes):
        return _bytes_as(k, mode, _fmt_path(path + [k]) + " (a key)")
    raise Fail(EXIT_USAGE, "the key %r at %s cannot be a JSON object key"
               % (k, _fmt_path(path) or "the root"))


def jsonable(obj, mode, path=None, active=None):
    """A structure json.dumps writes as it is; Fail(2) naming the place of
    anything JSON cannot hold (bytes unless `mode` says how, nan and
    infinities, tuple keys, cycles)."""
    path = [] if path is None else path
    active = set() if active is None else active
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise Fail(EXIT_USAGE, "the value at %s is %r, which JSON cannot hold" % (_fmt_path(path) or "the root", obj))
        return obj
    if isinstance(obj, bytes):
        return _bytes_as(obj, mode, _fmt_path(path))
    if not isinstance(obj, (dict, list, tuple)):
        raise Fail(EXIT_USAGE, "the value at %s is a %s, which JSON cannot hold"
                   % (_fmt_path(path) or "the root", type(obj).__name__))
    if id(obj) in active:
        raise Fail(EXIT_USAGE, "the value at %s contains itself (a cycle), which JSON cannot hold"
                   % (_fmt_path(path) or "the root"))
    active.add(id(obj))
    try:
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                jk = _json_key(k, mode, path)
                if jk in out:
                    raise Fail(EXIT_USAGE, "the keys of %s clash as JSON object keys (%r)"
                               % (_fmt_path(path) or "the root", jk))
                out[jk] = jsonable(v, mode, path + [k], active)
            return out
        return [jsonable(v, mode, path + [i], active) for i, v in enumerate(obj)]
    finally:
        active.discard(id(obj))


def render(value, args, path):
    """The text dump/get print for `value` (a view or a plain value found
    at `path`)."""
    try:
        plain = dshared.to_python(value)
        if args.json:
            return json.dumps(jsonable(plain, args.bytes, list(path)), indent=args.indent, allow_nan=False)
        return repr(plain)
    except RecursionError:
        raise Fail(EXIT_USAGE, "the value is nested too deeply to print") from None


# -- segments -------------------------------------------------------------------------

def _open(args):
    """Attach to args.name (exit status 1 if it is missing or unusable)."""
    try:
        _heap.validate_name(args.name)
    except ValueError as e:
        raise Fail(EXIT_USAGE, str(e))
    try:
        return dshared.Segment(args.name, create=False, allow_unsafe=args.allow_unsafe)
    except FileNotFoundError:
        raise Fail(EXIT_NOT_OK, "no segment %r in %s (dshared ls lists them)" % (args.name, _ops.SHM_DIR)) from None
    except PermissionError as e:
        raise Fail(EXIT_NOT_OK, str(e)) from None
    except CorruptSegmentError as e:
        raise Fail(EXIT_NOT_OK, str(e)) from None


def _path(name):
    return os.path.join(_ops.SHM_DIR, name)


def _others(name):
    """PIDs other than this one attached to segment `name`."""
    try:
        return [p for p in _ops.attached_pids(_path(name)) if p != os.getpid()]
    except OSError:
        return []


def _size(n):
    if n is None:
        return "-"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return "%.1f %s" % (n / (1 << shift), unit)
    return "%d B" % n


def _emit_json(obj):
    print(json.dumps(obj, indent=2, sort_keys=False))


# -- commands --------------------------------------------------------------------------

def cmd_ls(args):
    segs = _ops.segments(args.pattern, allow_unsafe=args.allow_unsafe)
    if args.json:
        _emit_json(segs)
        return EXIT_OK
    if not segs:
        print("no dshared segments in %s" % _ops.SHM_DIR)
        return EXIT_OK
    rows = [("NAME", "STATE", "OWNER", "CAPACITY", "USED", "BACKED", "COLLECTIONS", "ATTACHED")]
    for s in segs:
        rows.append((s["name"], s["state"], s["owner"], _size(s["capacity"]), _size(s["used"]),
                     _size(s["backed"]), "-" if s["collections"] is None else str(s["collections"]),
                     str(s["attached"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for s in segs:
        if s["problem"]:
            print("%s: %s" % (s["name"], s["problem"]))
    return EXIT_OK


def cmd_stat(args):
    others = _others(args.name)
    with _open(args) as seg:
        st = seg.stats()
        poisoned = seg.poisoned
        try:
            backed = os.stat(_path(args.name)).st_blocks * 512
        except OSError:
            backed = None
        named = {}
        if not poisoned:
            names = _codec.names_view(seg)
            for k, v in names.items():
                named[k] = len(v)
    info = dict(name=args.name, state="poisoned" if poisoned else "ok", backed=backed)
    info.update(st)
    info["free_lists"] = [{"size": size, "blocks": n, "bytes": b} for size, (n, b) in sorted(st["free_lists"].items())]
    info["named_collections"] = named
    info["attached"] = [{"pid": p, "command": _ops.process_command(p)} for p in others]
    if args.json:
        _emit_json(info)
        return EXIT_OK
    for key in ("name", "state", "capacity", "used", "free", "largest_free", "top", "reserved", "backed"):
        v = info[key]
        print("%-13s %s" % (key + ":", v if isinstance(v, str) or v is None
                            else "%d (%s)" % (v, _size(v))))
    for key in ("blocks", "repairs", "collections", "seq"):
        print("%-13s %d" % (key + ":", info[key]))
    print("named collections: %d" % len(named))
    for k, n in named.items():
        print("  %r: %d keys" % (k, n))
    print("attached processes: %d (this one not counted)" % len(others))
    for a in info["attached"]:
        print("  %d %s" % (a["pid"], a["command"]))
    return EXIT_OK


def cmd_check(args):
    try:
        seg = _open(args)
    except Fail as e:
        if e.code != EXIT_NOT_OK or not _ops._read_magic(_path(args.name)):
            raise
        problems, garbage = [str(e)], 0      # there, but not usable
    else:
        with seg:
            report = seg.check()
            problems, garbage = list(report.problems), report.garbage
            if seg.poisoned:
                problems.insert(0, "the segment is poisoned (marked corrupt by a failed repair)")
    ok = not problems
    if args.json:
        _emit_json({"name": args.name, "ok": ok, "problems": problems, "garbage": garbage})
    else:
        if ok:
            print("%s: ok%s" % (args.name, ", %d bytes of garbage (dshared collect frees them)" % garbage
                                if garbage else ""))
        else:
            print("%s: %d problem(s)" % (args.name, len(problems)))
            for p in problems:
                print("  " + p)
    return EXIT_OK if ok else EXIT_NOT_OK


def _base(seg, args):
    if args.collection is None:
        return seg.col()
    if args.collection not in seg.collections():
        raise Fail(EXIT_NOT_OK, "no collection %r in segment %r" % (args.collection, args.name))
    return seg.col(args.collection)


def cmd_dump(args):
    path = parse_keypath(args.keypath) if args.keypath is not None else []
    with _open(args) as seg:
        print(render(_walk(_base(seg, args), path), args, path))
    return EXIT_OK


def cmd_get(args):
    path = parse_keypath(args.keypath)
    with _open(args) as seg:
        print(render(_walk(_base(seg, args), path), args, path))
    return EXIT_OK


def cmd_set(args):
    path = parse_keypath(args.keypath)
    if not path:
        raise Fail(EXIT_USAGE, "set needs a KEYPATH of at least one step (the root cannot be replaced)")
    try:
        value = json.loads(args.value)
    except ValueError as e:
        raise Fail(EXIT_USAGE, "VALUE is not JSON (%s); a string needs quotes: '\"text\"'" % e) from None
    with _open(args) as seg:
        base = seg.col() if args.collection is None else seg.col(args.collection)
        parent = _walk(base, path[:-1])
        key = path[-1]
        if isinstance(parent, Mapping):
            try:
                parent[key] = value
            except TypeError as e:
                raise Fail(EXIT_USAGE, "bad key %s: %s" % (_fmt_path(path), e)) from None
        elif isinstance(parent, Sequence) and not isinstance(parent, (str, bytes, tuple)):
            if isinstance(key, bool) or not isinstance(key, int):
                raise Fail(EXIT_USAGE, "bad index %s: a list index is an int" % _fmt_path(path))
            try:
                parent[key] = value
            except IndexError:
                raise Fail(EXIT_NOT_OK, "no item %s: index out of range" % _fmt_path(path)) from None
        else:
            raise Fail(EXIT_NOT_OK, "cannot set %s: %s is a %s" % (
                _fmt_path(path), _fmt_path(path[:-1]) or "the root", type(parent).__name__))
    return EXIT_OK


def cmd_collect(args):
    with _open(args) as seg:
        freed = seg.collect()
    if args.json:
        _emit_json({"name": args.name, "freed": freed})
    else:
        print("%s: freed %d bytes" % (args.name, freed))
    return EXIT_OK


def cmd_rm(args):
    import fcntl
    try:
        _heap.validate_name(args.name)
    except ValueError as e:
        raise Fail(EXIT_USAGE, str(e))
    path = _path(args.name)
    got = _ops._read_magic(path)
    if got is None:
        if not os.path.lexists(path):
            raise Fail(EXIT_NOT_OK, "no segment %r in %s" % (args.name, _ops.SHM_DIR))
        if not args.force:
            raise Fail(EXIT_NOT_OK, "%s is not a regular file this user can read; --force removes it anyway" % path)
    elif got[1] != _ops.MAGIC and not args.force:
        raise Fail(EXIT_NOT_OK, "%s is not a dshared segment (no dshared magic); --force removes it anyway" % path)
    fd = -1
    try:
        busy = False
        if not args.force:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                # every attached handle holds a shared flock: an exclusive one
                # succeeds only if nobody is attached, and keeps attachers out
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = True
            others = _others(args.name)
            if busy or others:
                lines = ["  %d %s" % (p, _ops.process_command(p)) for p in others]
                raise Fail(EXIT_NOT_OK, "segment %r is attached by %s; --force removes it anyway "
                           "(attached processes keep working)\n%s"
                           % (args.name, "%d other process(es)" % len(others) if others
                              else "another process", "\n".join(lines)))
        dshared.unlink(args.name)
    except FileNotFoundError:
        raise Fail(EXIT_NOT_OK, "no segment %r in %s" % (args.name, _ops.SHM_DIR)) from None
    finally:
        if fd >= 0:
            os.close(fd)
    print("removed %s" % args.name)
    return EXIT_OK


def cmd_top(args):
    if args.interval <= 0:
        raise Fail(EXIT_USAGE, "--interval must be positive")
    if args.count < 0:
        raise Fail(EXIT_USAGE, "--count must not be negative")
    clear = sys.stdout.isatty() and not args.json
    with _open(args) as seg:
        prev, t_prev = seg.stats(), time.monotonic()
        n = 0
        try:
            while args.count == 0 or n < args.count:
                time.sleep(args.interval)
                cur, t = seg.stats(), time.monotonic()
                n += 1
                try:
                    backed = os.stat(_path(args.name)).st_blocks * 512
                except OSError:
                    backed = None
                # every write that changes what readers see bumps the sequence twice
                rate = (cur["seq"] - prev["seq"]) / 2.0 / max(t - t_prev, 1e-9)
                row = {"time": time.time(), "name": args.name,
                       "state": "poisoned" if seg.poisoned else "ok",
                       "capacity": cur["capacity"], "used": cur["used"], "reserved": cur["reserved"],
                       "backed": backed, "writes_per_s": round(rate, 1),
                       "repairs": cur["repairs"], "new_repairs": cur["repairs"] - prev["repairs"],
                       "attached": len(_others(args.name))}
                _top_print(row, clear, args.json)
                prev, t_prev = cur, t
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _top_print(row, clear, as_json):
    if clear:
        sys.stdout.write("\x1b[H\x1b[2J")
        print("dshared top %s    %s" % (row["name"], time.strftime("%H:%M:%S", time.localtime(row["time"]))))
        print()
        print("  state      %s" % row["state"])
        print("  used       %s of %s (%.1f%%)" % (_size(row["used"]), _size(row["capacity"]),
                                                 100.0 * row["used"] / row["capacity"]))
        print("  reserved   %s" % _size(row["reserved"]))
        print("  backed     %s" % _size(row["backed"]))
        print("  writes/s   %.1f" % row["writes_per_s"])
        print("  repairs    %d (+%d)" % (row["repairs"], row["new_repairs"]))
        print("  attached   %d other process(es)" % row["attached"])
    elif as_json:
        print(json.dumps(row))
    else:
        print("%s  %-8s used %-10s reserved %-10s backed %-10s writes/s %-9.1f repairs %d  attached %d"
              % (time.strftime("%H:%M:%S", time.localtime(row["time"])), row["state"], _size(row["used"]),
                 _size(row["reserved"]), _size(row["backed"]), row["writes_per_s"], row["repairs"],
                 row["attached"]))
    sys.stdout.flush()



# -- the parser --------------------------------------------------------------------------

def build_parser():
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="dshared", formatter_class=fmt,
        description="Inspect and manage dshared segments (Python dicts and lists in /dev/shm).",
        epilog=EXIT_CODES + "\n\n" + KEYPATH_HELP)
    p.add_argument("--version", action="version", version="dshared " + dshared.__version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, func, help, desc=None, keypath=False):
        sp = sub.add_parser(name, help=help, description=textwrap.fill(desc or help, 79), formatter_class=fmt,
                            epilog=EXIT_CODES + ("\n\n" + KEYPATH_HELP if keypath else ""))
        sp.set_defaults(func=func)
        sp.add_argument("--allow-unsafe", action="store_true",
                        help="attach to segments of other users or open to them (as root)")
        return sp

    def json_opts(sp, values=False):
        sp.add_argument("--json", action="store_true", help="write JSON")
        if values:
            sp.add_argument("--bytes", choices=("base64", "latin1", "repr"), default=None,
                            help="with --json, write bytes as base64 text, as latin-1 text or as their "
                                 "Python repr (without it, bytes fail with exit status 2)")
            sp.add_argument("--indent", type=int, default=None, metavar="N",
                            help="with --json, indent by N spaces")
            sp.add_argument("-c", "--collection", metavar="COLL",
                            help="start from the named collection COLL instead of the root dict")

    sp = add("ls", cmd_ls, "list the dshared segments in /dev/shm",
             "List the dshared segments in /dev/shm (and temporary files of creations under way or of "
             "creators that died): state (ok, poisoned, half-created, not-a-segment, foreign), owner, "
             "capacity, used, backed, named collections, attached processes.")
    sp.add_argument("pattern", nargs="?", metavar="PATTERN",
                    help="list only names matching this shell pattern, e.g. 'cache-*'")
    json_opts(sp)

    sp = add("stat", cmd_stat, "show a segment's counters, named collections and attached processes")
    sp.add_argument("name", metavar="NAME")
    json_opts(sp)

    sp = add("check", cmd_check, "verify a segment's whole heap (exit status 1 if not ok)")
    sp.add_argument("name", metavar="NAME")
    json_opts(sp)

    sp = add("dump", cmd_dump, "print a segment's contents, or those at KEYPATH",
             "Print the root dict (or the value at KEYPATH) as a Python repr, or as JSON with --json.",
             keypath=True)
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("keypath", nargs="?", metavar="KEYPATH")
    json_opts(sp, values=True)

    sp = add("get", cmd_get, "print the value at KEYPATH", keypath=True)
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("keypath", metavar="KEYPATH")
    json_opts(sp, values=True)

    sp = add("set", cmd_set, "store VALUE (JSON) at KEYPATH",
             "Store VALUE, a JSON text ('42', '\"text\"', '{\"a\": [1, 2]}'), at KEYPATH: a dict key is "
             "created or replaced, a list item replaced.", keypath=True)
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("keypath", metavar="KEYPATH")
    sp.add_argument("value", metavar="VALUE")
    sp.add_argument("-c", "--collection", metavar="COLL",
                    help="start from the named collection COLL (created if missing)")

    sp = add("collect", cmd_collect, "free a segment's unreachable cycles")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--json", action="store_true", help="write JSON")

    sp = add("rm", cmd_rm, "remove a segment from /dev/shm",
             "Remove a segment from /dev/shm, with the temporary files dead creators of it left. "
             "Refused (exit status 1) while other processes have it attached, or if it is not a "
             "dshared segment, unless --force.")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("-f", "--force", action="store_true",
                    help="remove it even while attached (they keep working) or if it is not dshared's")

    sp = add("top", cmd_top, "a live view of a segment: memory, writes/s, repairs",
             "Refresh every --interval seconds: used, reserved and backed memory, writes per second "
             "(from the write sequence: writes that changed something), repairs, attached processes. "
             "On a terminal the screen is redrawn; otherwise one line per refresh.")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("-i", "--interval", type=float, default=1.0, metavar="SECONDS",
                    help="seconds between refreshes (default 1)")
    sp.add_argument("-n", "--count", type=int, default=0, metavar="N",
                    help="stop after N refreshes (default 0: until interrupted)")
    sp.add_argument("--json", action="store_true", help="one JSON object per refresh")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    for opt, default in (("json", False), ("bytes", None), ("indent", None), ("collection", None)):
        if not hasattr(args, opt):
            setattr(args, opt, default)
    try:
        return args.func(args)
    except Fail as e:
        print("dshared %s: %s" % (args.command, e), file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # the reader went away (dshared dump NAME | head): quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_NOT_OK
    except (DsharedError, OSError) as e:
        print("dshared %s: %s" % (args.command, e), file=sys.stderr)
        return EXIT_NOT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
