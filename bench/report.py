"""Turn pytest-benchmark JSON into bench/results.md and bench/results.png.

    python bench/report.py [path/to/benchmark.json ...]
    python bench/report.py --last N

Without a path, the newest JSON under .benchmarks/ (written by
``pytest bench --benchmark-enable --benchmark-autosave -p no:randomly``) is used;
``--last N`` takes the N newest. With several runs, each benchmark (one
contender in one workload) is reported from the run where its own figure is
the median of the runs: one full run on a shared host can be slowed as a
whole for seconds at a time, and a median of runs is not.
"""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORDER = ["dict", "dshared", "manager", "lmdb_pickle", "lmdb_raw", "ultradict", "smd", "diskcache"]
FLOOR, OURS = "dict", "dshared"
TIMED = ["a_get_str16", "b_get_int", "c_miss_contains", "d_overwrite_str16", "e_set_1kib",
         "f_nested_read", "g_populate"]
TITLES = {
    "a_get_str16": "(a) get hit, 16-char str value",
    "b_get_int": "(b) get hit, int value",
    "c_miss_contains": "(c) miss, `k in m`",
    "d_overwrite_str16": "(d) overwrite with a 16-char str",
    "e_set_1kib": "(e) set a 1 KiB str",
    "f_nested_read": "(f) nested read `m[k]['key']`",
    "g_populate": "(g) populate from empty, per key",
    "h_readers": "(h) N reader processes: aggregate throughput",
    "h_readers_writer": "(h') N readers + 1 writer doing 10% of operations",
    "i_write_seen_latency": "(i) write -> seen latency across processes",
    "j_bytes_per_entry": "(j) bytes per entry (8-char keys, 16-char str values)",
    "m_backed_memory": "(m) memory the system backs vs memory in use (two handles open)",
    "n_bulk": "(n) bulk operations per entry, 1k to 1M keys",
}


def newest_json(n=1):
    files = glob.glob(os.path.join(ROOT, ".benchmarks", "**", "*.json"), recursive=True)
    if not files:
        sys.exit("no JSON under %s; run: pytest bench --benchmark-enable --benchmark-autosave -p no:randomly"
                 % os.path.join(ROOT, ".benchmarks"))
    return sorted(files, key=os.path.getmtime)[-n:]


def key_figure(b):
    """The figure a benchmark is ranked by across runs."""
    ei = b["extra_info"]
    if "throughput_ops_s" in ei:
        thr = ei["throughput_ops_s"]
        return thr[max(thr, key=int)]
    if "latency_us" in ei:
        return ei["latency_us"]["median"]
    if "median_ns_per_op" in ei and b["group"] != "j_bytes_per_entry":
        return ei["median_ns_per_op"]
    return b["stats"]["median"]


def median_runs(datas):
    """One list of benchmarks: for each, the run whose key figure is the median.
    The share of read throughput kept with a writer (h') is computed within
    each run (against that run's readers alone), and its median is kept in
    extra_info["reads_kept"]."""
    runs = {}
    for data in datas:
        alone = {contender(b): b["extra_info"]["read_throughput_ops_s"]
                 for b in data["benchmarks"] if b["group"] == "h_readers"}
        for b in data["benchmarks"]:
            if b["group"] == "h_readers_writer" and contender(b) in alone:
                base, got = alone[contender(b)], b["extra_info"]["read_throughput_ops_s"]
                b["extra_info"]["reads_kept"] = {n: got[n] / base[n] for n in got if base.get(n)}
            runs.setdefault(b["fullname"], []).append(b)
    out = []
    for bs in runs.values():
        pick = sorted(bs, key=key_figure)[(len(bs) - 1) // 2]
        kept = [b["extra_info"]["reads_kept"] for b in bs if "reads_kept" in b["extra_info"]]
        if kept:
            pick["extra_info"]["reads_kept"] = {
                n: sorted(k[n] for k in kept if n in k)[(len([k for k in kept if n in k]) - 1) // 2]
                for n in kept[0]}
        out.append(pick)
    return out


def contender(b):
    return (b.get("params") or {}).get("name") or b.get("param") or b["name"]


def sort_key(name):
    return ORDER.index(name) if name in ORDER else len(ORDER)


def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 1e3:
        return "%.0f ns" % ns
    if ns < 1e6:
        return "%.3g us" % (ns / 1e3)
    if ns < 1e9:
        return "%.3g ms" % (ns / 1e6)
    return "%.3g s" % (ns / 1e9)


def fmt_ratio(r):
    if r is None:
        return "-"
    return ("%.2fx" % r) if r < 100 else ("%.0fx" % r)


def fmt_rate(r):
    if r >= 1e6:
        return "%.2f M/s" % (r / 1e6)
    if r >= 1e3:
        return "%.1f k/s" % (r / 1e3)
    return "%.0f /s" % r


def per_op_ns(b):
    ops = b["extra_info"].get("ops_per_round") or 1
    return b["stats"]["median"] / ops * 1e9


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def timed_section(group, bs):
    per = {contender(b): per_op_ns(b) for b in bs}
    floor = per.get(FLOOR)
    peers = [v for k, v in per.items() if k not in (FLOOR, OURS)]
    best_peer = min(peers) if peers else None
    best_name = min((k for k in per if k not in (FLOOR, OURS)), key=per.get, default="-")
    rows, ratios = [], {}
    for b in sorted(bs, key=lambda b: sort_key(contender(b))):
        name = contender(b)
        ei = b["extra_info"]
        r_floor = per[name] / floor if floor else None
        ratios[name] = r_floor
        rows.append([name, ei.get("n_keys", "-"), fmt_time(per[name]), fmt_ratio(r_floor),
                     fmt_ratio(per[name] / best_peer) if best_peer else "-",
                     "%d x %d" % (b["stats"]["rounds"], ei.get("ops_per_round", 1))])
    text = table(["contender", "keys", "median / op", "vs dict", "vs fastest peer (%s)" % best_name,
                  "rounds x ops"], rows)
    return text, ratios


def readers_section(bs, with_writer=False):
    """(h) table; the (h') table also shows the share of their read throughput
    the readers keep (median over runs, each against its own run's readers alone)."""
    readers = sorted({int(n) for b in bs for n in b["extra_info"].get("throughput_ops_s", {})})
    header = ["contender", "keys"] + ["N=%d ops/s" % n for n in readers] + ["x vs N=1 @N=%d" % n for n in readers[1:]]
    if with_writer:
        header += ["reads kept @N=%d" % n for n in readers]
    rows = []
    for b in sorted(bs, key=lambda b: sort_key(contender(b))):
        ei = b["extra_info"]
        thr, sc = ei["throughput_ops_s"], ei["scaling_vs_1"]
        row = ([contender(b), ei.get("n_keys", "-")]
               + [fmt_rate(thr[str(n)]) if str(n) in thr else "-" for n in readers]
               + ["%.2f" % sc[str(n)] if str(n) in sc else "-" for n in readers[1:]])
        if with_writer:
            kept = ei.get("reads_kept", {})
            row += ["%.0f%%" % (100 * kept[str(n)]) if str(n) in kept else "-" for n in readers]
        rows.append(row)
    cpus = {b["extra_info"].get("cpus") for b in bs}
    text = table(header, rows)
    text += "\n\nCPUs: %s. Throughput counts reads and writes over the span from the first start to the last end." % (
        ", ".join(str(c) for c in cpus))
    return text


def latency_section(bs):
    rows = []
    for b in sorted(bs, key=lambda b: sort_key(contender(b))):
        ei = b["extra_info"]
        lat = ei["latency_us"]
        rows.append([contender(b), ei.get("samples", "-"), "%.1f" % lat["median"], "%.1f" % lat["p90"],
                     "%.1f" % lat["p99"], "%.1f" % lat["max"], ei.get("torn_reads", 0)])
    return table(["contender", "samples", "median us", "p90 us", "p99 us", "max us", "torn reads"], rows)


def bytes_section(bs):
    rows = []
    for b in sorted(bs, key=lambda b: sort_key(contender(b))):
        ei = b["extra_info"]
        extra = []
        if "private_bytes_per_entry_per_process" in ei:
            extra.append("+ %.0f B private per process" % ei["private_bytes_per_entry_per_process"])
        if "backed_bytes_per_entry" in ei:
            extra.append("backed: %.1f B" % ei["backed_bytes_per_entry"])
        if "file_bytes_per_entry" in ei:
            extra.append("file: %.0f B" % ei["file_bytes_per_entry"])
        rows.append([contender(b), ei.get("n_keys", "-"), "%.1f" % ei["bytes_per_entry"], "; ".join(extra) or "-",
                     ei.get("how", "")])
    return table(["contender", "entries", "bytes / entry", "also", "how"], rows)


NOTIFY_BEGIN = "<!-- notifications: begin -->"
NOTIFY_END = "<!-- notifications: end -->"


def notify_section(by_group):
    """Change notifications (bench/test_bench_notify.py, groups n_*)."""
    out = ["## Change notifications (wait words)", "",
           "dshared only, with polling as the comparison (bench/test_bench_notify.py; "
           "the instruction counts of bench/notify_cost.py are in docs/guides/notifications.md).", ""]
    rows = []
    for b in by_group.get("n_a_write_cost", []):
        ei = b["extra_info"]
        rows += [["write `d[k] = i`, no wait area", "%.1f ns" % ei["write_ns_no_area"]],
                 ["... wait area, nobody waiting", "%.1f ns (%+.1f ns)" % (ei["write_ns_area_nobody_waits"],
                                                                          ei["extra_ns_nobody_waits"])],
                 ["... a waiter on another word", "%.1f ns (%+.1f ns)" % (ei["write_ns_waiter_elsewhere"],
                                                                         ei["extra_ns_waiter_elsewhere"])],
                 ["one FUTEX_WAKE nobody waits for (anchor)", "%.0f ns" % ei["futex_wake_ns"]]]
    for g, label in (("n_b_wake_latency", "write -> %s returns in another process"),
                     ("n_c_wait_any_128", "write -> wait_any over 128 keys returns")):
        for b in by_group.get(g, []):
            ei = b["extra_info"]
            rows.append([label % ei.get("mode", "") if "%s" in label else label,
                         "p50 %.1f us, p90 %.1f us, p99 %.1f us (%d samples)"
                         % (ei["p50_us"], ei["p90_us"], ei["p99_us"], ei["samples"])])
    for b in by_group.get("n_d_idle_cpu", []):
        ei = b["extra_info"]
        rows.append(["CPU of %d idle waiters over %.0f s" % (ei["waiters"], ei["seconds"]),
                     "%.2f%% of a core (one polling process: %.0f%%)"
                     % (ei["waiters_cpu_percent_of_a_core"], ei["poller_cpu_percent_of_a_core"])])
    for b in by_group.get("n_e_false_wakes", []):
        ei = b["extra_info"]
        rows.append(["wake-ups of a key's waiter per write of other keys", "%.4f (%d in %d writes)"
                     % (ei["false_wakes_per_write"], ei["wakes"], ei["writes_to_other_keys"])])
    out += [table(["figure", "measured"], rows), ""]
    return "\n".join([NOTIFY_BEGIN] + out + [NOTIFY_END])


def backed_section(bs):
    rows = []
    for b in sorted(bs, key=lambda b: (b["extra_info"].get("n_keys", 0), b["extra_info"].get("scenario", ""))):
        ei = b["extra_info"]
        lm = ["%.1f" % ei[k] if k in ei else "-" for k in ("lmdb_raw_file_B_per_entry", "lmdb_pickle_file_B_per_entry")]
        rows.append([ei.get("scenario", "?"), ei.get("n_keys", "-"), ei.get("live_entries", "-"),
                     "%.1f" % ei["used_B_per_entry"], "%.1f" % ei["backed_B_per_entry"],
                     "%.2f" % ei["backed_vs_used"]] + lm)
    text = table(["scenario", "keys", "live after", "used B/key", "backed B/key", "backed / used",
                  "lmdb raw file B/key", "lmdb pickled file B/key"], rows)
    return text + ("\n\nPer key loaded. `backed`: the segment file's allocated blocks (st_blocks * 512), "
                   "which is what /dev/shm and the memory cgroup charge; it includes the reserve kept above "
                   "the heap top (256 KiB or 1/16 of the heap). grow_delete_90: ~100-byte values, 90% deleted (oldest first) "
                   "with a reader process walking the dict.")


def bulk_section(bs):
    per = {}
    for b in bs:
        ei = b["extra_info"]
        per[(ei.get("op"), ei.get("n_keys"), contender(b))] = per_op_ns(b)
    ops = sorted({k[0] for k in per}, key=lambda o: ["to_python", "copy", "items_loop", "update_chunked",
                                                         "populate"].index(o) if o in ("to_python", "copy",
                                                         "items_loop", "update_chunked", "populate") else 9)
    sizes = sorted({k[1] for k in per})
    rows = []
    for op in ops:
        first = per.get((op, sizes[0], OURS))
        for n in sizes:
            ours, floor, lm = per.get((op, n, OURS)), per.get((op, n, FLOOR)), per.get((op, n, "lmdb_raw"))
            rows.append([op, n, fmt_time(ours) if ours else "-", fmt_time(floor) if floor else "-",
                         fmt_time(lm) if lm else "-",
                         fmt_ratio(ours / floor) if ours and floor else "-",
                         fmt_ratio(ours / lm) if ours and lm else "-",
                         fmt_ratio(ours / first) if ours and first else "-"])
    text = table(["operation", "keys", "dshared / key", "dict / key", "lmdb raw / key", "vs dict", "vs lmdb raw",
                  "dshared vs its smallest size"], rows)
    return text + ("\n\nOne round each. to_python: dshared.to_python(d) / a dict comprehension / "
                   "dict(txn.cursor()); copy: d.copy() / dict.copy() / dict(txn.cursor()); update_chunked: ten "
                   "update() calls (lmdb: ten putmulti transactions); populate: one insert per key "
                   "(lmdb: one transaction for all).")


def plot(ratios, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in TIMED if g in ratios]
    names = sorted({n for g in groups for n in ratios[g] if n != FLOOR}, key=sort_key)
    fig, ax = plt.subplots(figsize=(max(9, 1.8 * len(groups)), 5))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, g in enumerate(groups):
            r = ratios[g].get(name)
            if r:
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(r)
        ax.bar(xs, ys, width, label=name, edgecolor="black" if name == OURS else None,
               linewidth=1.2 if name == OURS else 0)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.split("_", 1)[0] + ") " + g.split("_", 1)[1].replace("_", " ") for g in groups],
                       rotation=20, ha="right")
    ax.set_ylabel("median time per op / dict (log)")
    ax.set_title("Time per operation relative to a private dict (lower is better)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CACHE_BEGIN = "<!-- cache mode: begin -->"
CACHE_END = "<!-- cache mode: end -->"
CACHE_COST = os.path.join(HERE, "cache_cost.txt")


def cache_section():
    """The cache mode's figures: bench/cache_results.md (written by a full run
    of bench/test_bench_cache.py, not by pytest-benchmark) and, where present,
    bench/cache_cost.txt (the output of bench/cache_cost.py: instructions per
    hit and per miss, by function)."""
    path = os.path.join(HERE, "cache_results.md")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        body = f.read().split("\n", 1)[1].strip("\n")      # its own title left out
    out = [CACHE_BEGIN, "## Cache mode (bench/test_bench_cache.py, bench/cache_results.md)", "", body]
    if os.path.exists(CACHE_COST):
        with open(CACHE_COST) as f:
            out += ["", "Instructions per call (callgrind, `python3 bench/cache_cost.py`; self cost by "
                    "function, the largest):", "", "```", f.read().strip("\n"), "```"]
    out.append(CACHE_END)
    return "\n".join(out)


def splice(md, begin, end, section):
    with open(md) as f:
        text = f.read()
    if begin in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(md, "w") as f:
        f.write(text)


def main(argv):
    if len(argv) > 1 and argv[1] == "--cache":
        # only the cache mode's section of results.md
        md = os.path.join(HERE, "results.md")
        splice(md, CACHE_BEGIN, CACHE_END, cache_section())
        print("wrote the cache mode section of %s" % md)
        return
    if len(argv) > 2 and argv[1] == "--notify":
        # only the notifications section of results.md, from the runs given
        by_group = {}
        for p in argv[2:]:
            with open(p) as f:
                for b in json.load(f)["benchmarks"]:
                    by_group.setdefault(b["group"], []).append(b)
        md = os.path.join(HERE, "results.md")
        with open(md) as f:
            text = f.read()
        section = notify_section(by_group)
        if NOTIFY_BEGIN in text:
            text = text[:text.index(NOTIFY_BEGIN)] + section + text[text.index(NOTIFY_END) + len(NOTIFY_END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(md, "w") as f:
            f.write(text)
        print("wrote the notifications section of %s" % md)
        return
    if len(argv) > 2 and argv[1] == "--last":
        paths = newest_json(int(argv[2]))
    else:
        paths = argv[1:] or newest_json()
    datas = []
    for p in paths:
        with open(p) as f:
            datas.append(json.load(f))
    data = datas[-1]
    path = ", ".join(os.path.relpath(p, ROOT) for p in paths)
    by_group = {}
    for b in median_runs(datas):
        by_group.setdefault(b["group"], []).append(b)

    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {})
    lines = ["# dshared benchmark results", "",
             "Source: %d full run%s: `%s` (last %s). Python %s, %s, %s logical CPUs.%s" % (
                 len(paths), "s" if len(paths) > 1 else "", path, data.get("datetime", "?"),
                 mi.get("python_version", "?"), cpu.get("brand_raw", mi.get("processor", "?")),
                 cpu.get("count", "?"),
                 " Each row is taken from the run where its own figure is the median of the runs."
                 if len(paths) > 1 else ""),
             "",
             "Medians per operation; each round is a batch of operations on keys read in a "
             "shuffled order fixed by a seed. `vs dict`: time / private dict time. "
             "`vs fastest peer`: time / fastest of the other shared contenders (not dict, not dshared). "
             "smd runs at a reduced key count: it unpickles its whole dict on every access.", ""]
    ratios = {}
    for g in TIMED:
        if g in by_group:
            text, ratios[g] = timed_section(g, by_group[g])
            lines += ["## " + TITLES[g], "", text, ""]
    for g in ("h_readers", "h_readers_writer"):
        if g in by_group:
            lines += ["## " + TITLES[g], "", readers_section(by_group[g], g == "h_readers_writer"), ""]
    if "i_write_seen_latency" in by_group:
        lines += ["## " + TITLES["i_write_seen_latency"], "", latency_section(by_group["i_write_seen_latency"]), ""]
    if "j_bytes_per_entry" in by_group:
        lines += ["## " + TITLES["j_bytes_per_entry"], "", bytes_section(by_group["j_bytes_per_entry"]), ""]
    if any(g.startswith("n_") for g in by_group):
        lines += [notify_section(by_group), ""]
    if "m_backed_memory" in by_group:
        lines += ["## " + TITLES["m_backed_memory"], "", backed_section(by_group["m_backed_memory"]), ""]
    if "n_bulk" in by_group:
        lines += ["## " + TITLES["n_bulk"], "", bulk_section(by_group["n_bulk"]), ""]
    if cache_section():
        lines += [cache_section(), ""]
    notes = {}
    for b in data["benchmarks"]:
        note = b["extra_info"].get("contender_note")
        if note:
            notes.setdefault(contender(b), note)
    if notes:
        lines += ["## Contenders", ""] + ["- **%s**: %s" % (k, notes[k]) for k in sorted(notes, key=sort_key)] + [""]
    md = os.path.join(HERE, "results.md")
    with open(md, "w") as f:
        f.write("\n".join(lines))
    png = os.path.join(HERE, "results.png")
    if ratios:
        plot(ratios, png)
    print("wrote %s and %s from %s" % (md, png, path))


if __name__ == "__main__":
    main(sys.argv)
