"""The command line, each subcommand run as `python -m dshared ...` in a
subprocess against a real segment: output, --json, exit statuses."""
import json
import os
import sys

import pytest

import dshared
from _helpers import ROOT, run_killed_on_timeout
from _proc import Popen

SHM = "/dev/shm/"


def cli(*args, timeout=60):
    """(exit status, stdout, stderr) of `python -m dshared ARGS`."""
    return run_killed_on_timeout([sys.executable, "-m", "dshared"] + [str(a) for a in args], timeout)


def inproc(capsys, *args):
    """The same, run by dshared.__main__.main in this process: for the
    finer cases, once the subprocess path is covered."""
    from dshared.__main__ import main
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_json(*args):
    rc, out, err = cli(*args, "--json")
    assert rc == 0, err
    return json.loads(out)


def _poison(name, capacity):
    import mmap
    import struct
    with open(SHM + name, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        assert struct.unpack_from("<Q", m, 56)[0] == capacity      # Header.capacity
        struct.pack_into("<Q", m, 80, struct.unpack_from("<Q", m, 80)[0] | 1)   # Header.flags


ATTACH_AND_WAIT = """
import sys, dshared
seg = dshared.attach(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


# -- help and usage -----------------------------------------------------------------------

def test_help_and_usage_errors():
    rc, out, err = cli("--help")
    assert rc == 0
    for word in ("ls", "stat", "check", "dump", "get", "set", "collect", "rm", "top", "exit status", "KEYPATH"):
        assert word in out
    rc, out, err = cli("dump", "--help")
    assert rc == 0 and out.startswith("usage: dshared dump") and "exit status" in out and "KEYPATH" in out
    assert cli()[0] == 2                                   # no command
    rc, out, err = cli("stat", "bad/name")
    assert rc == 2 and "must not contain" in err


def test_help_of_every_command(capsys):
    from dshared.__main__ import main
    for cmd in ("ls", "stat", "check", "dump", "get", "set", "collect", "rm", "top"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith("usage: dshared " + cmd) and "exit status" in out, cmd
    for argv in (["frobnicate"], ["stat"], ["stat", "x", "--bogus"], ["top", "x", "--count", "many"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        capsys.readouterr()


def test_missing_segment_is_exit_1(shm_name, capsys):
    for i, cmd in enumerate((["stat"], ["check"], ["dump"], ["get", None, "a"], ["set", None, "a", "1"],
                             ["collect"], ["rm"], ["top", None, "--count", "1"])):
        args = [shm_name if a is None else a for a in cmd]
        if len(args) == 1:
            args.append(shm_name)
        rc, out, err = cli(*args) if i < 2 else inproc(capsys, *args)
        assert rc == 1 and "no segment" in err, (args, rc, err)
    assert not os.path.exists(SHM + shm_name)


# -- ls, stat, check -----------------------------------------------------------------------------

def test_ls(segment, shm_name):
    segment.col()["d"] = {"k": "v"}
    segment.col("users")["bob"] = 1
    rc, out, err = cli("ls", shm_name)
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "STATE", "OWNER", "CAPACITY", "USED", "BACKED", "COLLECTIONS", "ATTACHED"]
    assert row.split()[:2] == [shm_name, "ok"] and row.split()[-2:] == ["1", "1"]
    (s,) = cli_json("ls", shm_name)
    assert s["name"] == shm_name and s["state"] == "ok" and s["capacity"] == 64 << 20
    assert s["used"] == segment.stats()["used"] and s["collections"] == 1
    assert s["pids"] == [os.getpid()]                      # this test's process; ls does not count itself
    rc, out, err = cli("ls", shm_name + "-none*")
    assert (rc, out) == (0, "no dshared segments in /dev/shm\n")
    assert cli_json("ls", shm_name + "-none*") == []


def test_ls_shows_poisoned_and_half_created(make_segment, shm_name):
    make_segment(1 << 20)
    _poison(shm_name, 1 << 20)
    temp = "." + shm_name + ".dsh-new-fedcba9876543210"
    with open(SHM + temp, "wb") as f:
        f.write(bytes(4096))
    try:
        states = {s["name"]: s["state"] for s in cli_json("ls", shm_name + "*")}
        assert states == {shm_name: "poisoned", temp: "half-created"}
        rc, out, err = cli("ls", shm_name + "*")
        assert rc == 0 and "poisoned" in out and "half-created" in out and "died" in out
    finally:
        os.unlink(SHM + temp)


def test_stat(segment, shm_name):
    segment.col()["d"] = list(range(100))
    users = segment.col("users")
    users.update(a=1, b=2)
    info = cli_json("stat", shm_name)
    st = segment.stats()
    assert info["name"] == shm_name and info["state"] == "ok"
    for key in ("capacity", "used", "reserved", "blocks", "repairs", "seq"):
        assert info[key] == st[key], key
    assert info["backed"] == os.stat(SHM + shm_name).st_blocks * 512
    assert info["named_collections"] == {"users": 2}
    (me,) = info["attached"]
    assert me["pid"] == os.getpid() and ("python" in me["command"] or "pytest" in me["command"])
    rc, out, err = cli("stat", shm_name)
    assert rc == 0
    assert "capacity:     %d (64.0 MiB)" % (64 << 20) in out
    assert "named collections: 1" in out and "'users': 2 keys" in out
    assert "attached processes: 1" in out and "%d " % os.getpid() in out


def test_check(make_segment, shm_name):
    seg = make_segment(1 << 20)
    seg.col()["x"] = {"a": [1, 2, 3]}
    rc, out, err = cli("check", shm_name)
    assert (rc, out) == (0, "%s: ok\n" % shm_name), err
    assert cli_json("check", shm_name) == {"name": shm_name, "ok": True, "problems": [], "garbage": 0}
    _poison(shm_name, 1 << 20)
    rc, out, err = cli("check", shm_name)
    assert rc == 1 and "poisoned" in out
    rc, out, err = cli("check", shm_name, "--json")
    report = json.loads(out)
    assert rc == 1 and report["ok"] is False and "poisoned" in report["problems"][0]


# -- dump, get, set ------------------------------------------------------------------------------

def test_dump(segment, shm_name):
    root = segment.col()
    root.update({"a": {"x": [1, 2, None]}, "b": b"q\xff", "t": (1, "two")})
    segment.col("users")["bob"] = {"age": 3}
    rc, out, err = cli("dump", shm_name)
    assert (rc, out) == (0, repr({"a": {"x": [1, 2, None]}, "b": b"q\xff", "t": (1, "two")}) + "\n"), err
    rc, out, err = cli("dump", shm_name, "--json")
    assert rc == 2 and out == ""
    assert "['b'] is bytes, which JSON cannot hold" in err and "--bytes=base64" in err
    want = {"a": {"x": [1, 2, None]}, "t": [1, "two"]}
    assert cli_json("dump", shm_name, "--bytes=base64") == dict(want, b="cf8=")
    assert cli_json("dump", shm_name, "--bytes=latin1") == dict(want, b="q\xff")
    assert cli_json("dump", shm_name, "--bytes=repr") == dict(want, b="b'q\\xff'")
    rc, out, err = cli("dump", shm_name, "a.x", "--json", "--indent", "2")
    assert rc == 0 and json.loads(out) == [1, 2, None] and "\n  1," in out
    assert cli("dump", shm_name, "-c", "users")[1] == "{'bob': {'age': 3}}\n"
    rc, out, err = cli("dump", shm_name, "-c", "nobody")
    assert rc == 1 and "no collection" in err
    assert "nobody" not in segment.collections()           # dump never creates one


def test_dump_json_fails_clearly_on_what_json_cannot_hold(segment, shm_name, capsys):
    root = segment.col()
    cyc = []
    cyc.append(cyc)
    root.update({"nan": [float("nan")], "tk": {(1, 2): "x"}, "cyc": cyc, "clash": {1: "a", "1": "b"}})
    for key, msg in (("nan", "['nan'][0] is nan"), ("tk", "key (1, 2) at ['tk']"),
                     ("cyc", "contains itself"), ("clash", "clash")):
        rc, out, err = cli("dump", shm_name, key, "--json") if key == "nan" else \
            inproc(capsys, "dump", shm_name, key, "--json")
        assert rc == 2 and msg in err, (key, err)
        rc, out, err = inproc(capsys, "dump", shm_name, key)   # the repr holds them all
        assert rc == 0, err


def test_get_and_keypaths(segment, shm_name, capsys):
    root = segment.col()
    root.update({"users": [{"tags": ["a", "b"]}], "m": {"3": "str", 3: "int", "a.b": 1, (1, 2): "pair"}})
    assert cli("get", shm_name, "users.0.tags.1") == (0, "'b'\n", "")
    assert cli("get", shm_name, '["users", 0, "tags"]', "--json") == (0, '["a", "b"]\n', "")
    rc, out, err = cli("get", shm_name, "users.5")
    assert (rc, out) == (1, "") and "no item ['users'][5]" in err
    rc, out, err = cli("get", shm_name, '["users"')
    assert (rc, out) == (2, "") and "bad KEYPATH" in err

    def get(path):
        return inproc(capsys, "get", shm_name, path)
    assert get("users.-1.tags.0")[1] == "'a'\n"
    assert get("m.3")[1] == "'int'\n"
    assert get('["m", "3"]')[1] == "'str'\n"
    assert get('["m", "a.b"]')[1] == "1\n"
    assert get('["m", [1, 2]]')[1] == "'pair'\n"
    from dshared.__main__ import parse_keypath
    assert parse_keypath("a.-2.3x.\u00b2.--1") == ["a", -2, "3x", "\u00b2", "--1"]
    assert parse_keypath('[]') == [] and parse_keypath('[1.5, null, true, ["x", [2]]]') == [1.5, None, True, ("x", (2,))]
    for missing in ("nope", "users.0.tags.1.x", "m.4"):
        rc, out, err = get(missing)
        assert rc == 1 and out == "" and "no key" in err, (missing, err)
    for bad in ("users..0", "", '["users", {"a": 1}]', "users.x", '{"a": 1'):
        rc, out, err = get(bad)
        assert rc == (1 if bad == '{"a": 1' else 2), (bad, rc, err)     # not '[': one str key


def test_set(segment, shm_name):
    root = segment.col()
    root["users"] = [{"name": "a"}]
    assert cli("set", shm_name, "users.0.name", '"b"')[0] == 0
    assert cli("set", shm_name, "new", '{"k": [1, 2.5, null, true]}')[0] == 0
    assert cli("set", shm_name, "-c", "cfg", "debug", "true")[0] == 0
    assert root["users"][0]["name"] == "b"
    assert root["new"] == {"k": [1, 2.5, None, True]}
    assert segment.col("cfg") == {"debug": True}
    rc, out, err = cli("set", shm_name, "x", "hello")         # not JSON
    assert rc == 2 and "not JSON" in err and "x" not in root
    rc, out, err = cli("set", shm_name, "missing.k", "1")      # no parent
    assert rc == 1 and "missing" not in root
    rc, out, err = cli("set", shm_name, "users.3", "1")        # out of range
    assert rc == 1 and len(root["users"]) == 1
    assert cli("set", shm_name, "[]", "1")[0] == 2            # the root itself
    assert segment.check().ok


# -- collect, rm, top -----------------------------------------------------------------------------

def test_collect(segment, shm_name):
    root = segment.col()
    cyc = [1, 2, 3]
    cyc.append(cyc)
    root["c"] = cyc
    del root["c"]
    garbage = segment.check().garbage
    assert garbage > 0
    rc, out, err = cli("collect", shm_name)
    assert (rc, out) == (0, "%s: freed %d bytes\n" % (shm_name, garbage)), err
    assert segment.check().garbage == 0
    assert cli_json("collect", shm_name) == {"name": shm_name, "freed": 0}


def test_rm_refuses_while_another_process_is_attached(shm_name):
    dshared.Segment(shm_name, 1 << 20, create=True).close()
    with Popen(ATTACH_AND_WAIT, shm_name, stdin=-1) as child:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        rc, out, err = cli("rm", shm_name)
        assert rc == 1 and "attached" in err and "--force" in err and str(child.pid) in err
        assert os.path.exists(SHM + shm_name)
        child.stdin.close()
        assert child.wait(30) == 0
    rc, out, err = cli("rm", shm_name)
    assert (rc, out) == (0, "removed %s\n" % shm_name), err
    assert not os.path.exists(SHM + shm_name)
    assert cli("rm", shm_name)[0] == 1                         # gone


def test_rm_force(shm_name):
    dshared.Segment(shm_name, 1 << 20, create=True).close()
    with Popen(ATTACH_AND_WAIT, shm_name, stdin=-1) as child:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        assert cli("rm", "--force", shm_name) == (0, "removed %s\n" % shm_name, "")
        assert not os.path.exists(SHM + shm_name)
        child.stdin.close()
        assert child.wait(30) == 0


def test_rm_refuses_what_is_not_a_segment(shm_name):
    with open(SHM + shm_name, "wb") as f:
        f.write(b"not dshared" * 100)
    try:
        rc, out, err = cli("rm", shm_name)
        assert rc == 1 and "not a dshared segment" in err and os.path.exists(SHM + shm_name)
        assert cli("rm", "-f", shm_name)[0] == 0 and not os.path.exists(SHM + shm_name)
    finally:
        if os.path.exists(SHM + shm_name):
            os.unlink(SHM + shm_name)


WRITER = """
import sys, time, dshared
shm = dshared.attach(sys.argv[1]).col()
print("ready", flush=True)
i = 0
while True:
    shm["k"] = i
    i += 1
    time.sleep(0.0005)
"""


def test_top_counts_refreshes_and_sees_writes(segment, shm_name):
    rc, out, err = cli("top", shm_name, "--count", "2", "--interval", "0.1")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2, err
    assert all("used" in ln and "writes/s" in ln and "repairs 0" in ln for ln in lines)
    with Popen(WRITER, shm_name) as writer:
        assert writer.stdout.readline() == "ready\n", writer.stderr.read()
        rc, out, err = cli("top", shm_name, "--count", "2", "--interval", "0.3", "--json")
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and len(rows) == 2, err
    assert all(r["name"] == shm_name and r["capacity"] == 64 << 20 and r["state"] == "ok" for r in rows)
    assert sum(r["writes_per_s"] for r in rows) > 0
    assert max(r["attached"] for r in rows) >= 2             # the writer and this test's process
    assert cli("top", shm_name, "--interval", "0")[0] == 2


def test_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    assert '[project.scripts]\ndshared = "dshared.__main__:main"' in text
    from dshared.__main__ import main
    assert main(["ls", "dsh-no-such-name-*"]) == 0


def test_top_redraws_on_a_terminal(segment, shm_name):
    import subprocess
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dshared", "top", shm_name, "--count", "2",
                                 "--interval", "0.1"], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.PIPE, cwd="/")
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:             # EIO: the child closed the terminal
                break
            if not b:
                break
            chunks.append(b)
        assert proc.wait(30) == 0, proc.stderr.read()
        proc.stderr.close()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    screen = b"".join(chunks).decode()
    assert screen.count("\x1b[H\x1b[2J") == 2
    assert "dshared top %s" % shm_name in screen and "writes/s" in screen and "of 64.0 MiB" in screen
    assert "attached   1 other process(es)" in screen          # this test's process
