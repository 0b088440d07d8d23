"""What make bench prints and judges: the targets (``TARGET_*``, ``targets``: each wanted, measured, met), the
report (``render``: the machine line, each section's own tables in the registry's order, the targets table), and
the pieces the sections render and summarise with (``table``, ``fmt``, ``pm``, ``median``, ``spread``).
"""
TARGET_RATIO = 3.0            # train.py vs the plain loop, default model at 28 px
TARGET_CEILING_FRACTION = 0.30  # of the measured matmul ceiling of the step's dtype, default model
TARGET_AUC = 0.97
TRAIN_TIME_LIMIT_S = 300  # the "defaults train PneumoniaMNIST 28 px in at most 5 minutes on 2 cores"


def fmt(value, spec=".1f", none="-"):
    return none if value is None else format(value, spec)


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    return "\n".join(lines)


def pm(stats, spec=".4f"):
    """mean ± sd (sd left out with one value)."""
    if stats["mean"] is None:
        return "-"
    return format(stats["mean"], spec) + ("" if stats["sd"] is None else " ± " + format(stats["sd"], spec))


def spread(values):
    """mean, sample standard deviation (None for fewer than two values) and the values."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "values": []}
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "values": values}


def median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def targets(results):
    out = []
    for row in results.get("throughput") or []:
        if row["model"] == "smallcnn":
            out.append({"name": f"train.py vs plain loop, {row['case']}", "target": f">= {TARGET_RATIO}x",
                        "measured": f"{row['ratio']:.2f}x", "met": row["ratio"] >= TARGET_RATIO})
            if row.get("ratio_cpu_time"):
                out.append({"name": f"train.py vs plain loop, CPU time per image, {row['case']}",
                            "target": f">= {TARGET_RATIO}x", "measured": f"{row['ratio_cpu_time']:.2f}x",
                            "met": row["ratio_cpu_time"] >= TARGET_RATIO})
            if "ceiling_fraction" in row:
                out.append({"name": f"step FLOP/s vs {row['ceiling_dtype']} matmul ceiling, {row['case']}",
                            "target": f">= {TARGET_CEILING_FRACTION:.0%}", "measured": f"{row['ceiling_fraction']:.0%}",
                            "met": row["ceiling_fraction"] >= TARGET_CEILING_FRACTION})
    d = results.get("dev")
    full = ((d or {}).get("settings") or {}).get("pneumonia-all")
    if full and d["extra_args"] == "defaults":
        slowest = max(full["runs"], key=lambda r: r["wall_s"])
        load = slowest["load_before"][0] if slowest["load_before"] else None
        cpus = results["machine"]["cpus"]
        out.append({"name": f"defaults train PneumoniaMNIST 28 px (all {full['n_train']}) on {cpus} CPUs, slowest seed",
                    "target": f"<= {TRAIN_TIME_LIMIT_S} s",
                    "measured": f"{slowest['wall_s']:.0f} s (load {fmt(load, '.1f')} before it)",
                    "met": slowest["wall_s"] <= TRAIN_TIME_LIMIT_S})
    out += (results.get("datapath") or {}).get("targets", [])  # its own (benchmarks/sections/datapath.py)
    q = results.get("quality")
    if q:
        out.append({"name": f"default configuration reaches val AUC {TARGET_AUC}",
                    "target": "reached", "measured": f"epoch {q['epoch']}, {q['wall_s']:.0f} s" if q["reached"]
                    else "not reached", "met": q["reached"]})
    return out


def render(results, sections):
    """The printed report of ``results``: the machine line, then for each of ``sections`` (run.SECTIONS: name ->
    module, in order) that has a result, ``module.render(result, results)``, then the targets."""
    m = results["machine"]
    parts = [f"machine: {m.get('cpu')}, {m['cpus']} CPUs, {m.get('mem_gb', '?')} GB, ISA {m.get('isa')}; "
             f"torch {results['torch']}; threads {results.get('threads', 'default')}; "
             f"load average at start {results['load_start']}, "
             f"at end {results['load_end']}; mode {results['mode']}"]
    for name, section in sections.items():
        if results.get(name):
            parts.append(section.render(results[name], results))
    tg = results.get("targets")
    if tg:
        parts.append("\nTargets:\n" + table(["target", "wanted", "measured", "met"],
                                            [[x["name"], x["target"], x["measured"], "yes" if x["met"] else "NO"]
                                             for x in tg]))
    return "\n".join(parts)
