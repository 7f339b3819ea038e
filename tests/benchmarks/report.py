# ruff: noqa: RUF001 - typographic signs (multiplication sign, en dash) are intended
"""Markdown tables from a benchmark run's results, and the BENCHMARKS.md page around them."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "first_spawn_ratio": 10.0,
    "repeat_requests": 2,  # Profile + namespace owner check, concurrent (issue 18)
    "loop_lag_ms": 20.0,
}


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _s(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:,.2f} s"


def _n(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _mib(kib: int | float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:,.0f} MiB"


def first_spawn_table(r: dict[str, Any]) -> str:
    dna, old = r["dna"], r["old"]
    lines = [
        "| method | median | mean | p90 | min–max | API requests (median) | failures |",
        "|---|---|---|---|---|---|---|",
        "| DnaSpawner `ProfileProvisioner.ensure` (hub identity)"
        f" | {_ms(dna['seconds']['median'])} | {_ms(dna['seconds']['mean'])}"
        f" | {_ms(dna['seconds']['p90'])}"
        f" | {_ms(dna['seconds']['min'])}–{_ms(dna['seconds']['max'])}"
        f" | {_n(dna['requests']['median'], 0)} | {len(dna['missing_after'])} incomplete |",
        f"| old hook: `params.env` + `kubectl apply -k` ×2 (hub identity) |"
        f" {_ms(old['seconds']['median'])} | {_ms(old['seconds']['mean'])}"
        f" | {_ms(old['seconds']['p90'])}"
        f" | {_ms(old['seconds']['min'])}–{_ms(old['seconds']['max'])}"
        f" | {_n(old['requests']['median'], 0)}"
        f" | first apply failed {old['first_apply_failed']}/{r['samples']},"
        f" second {old['second_apply_failed']}/{r['samples']} |",
        "",
        f"**Ratio (old ÷ DnaSpawner): {_n(r['ratio_median'])}× on the median,"
        f" {_n(r['ratio_mean'])}× on the mean** ({r['samples']} brand-new users per method,"
        " one at a time, the two methods interleaved).",
        "",
        "DnaSpawner's median time by phase: "
        + ", ".join(
            f"{name.replace('_', ' ')} {_ms(v)}" for name, v in dna["phases_median"].items()
        )
        + ".",
        "",
        "Old hook: median first apply "
        f"{_ms(old['apply_seconds_median'][0])}, second {_ms(old['apply_seconds_median'][1])}."
        + (
            " The first apply's error, as on the old platform: "
            f"`{old['first_apply_error_example']}`"
            if old["first_apply_error_example"]
            else ""
        ),
    ]
    return "\n".join(lines)


def repeat_table(r: dict[str, Any]) -> str:
    rep = r["repeat"]
    dna, old = rep["dna"], rep["old"]
    return "\n".join(
        [
            "| method | API requests (max) | median | p90 | notes |",
            "|---|---|---|---|---|",
            f"| DnaSpawner | {_n(dna['requests']['max'], 0)} | {_ms(dna['seconds']['median'])}"
            f" | {_ms(dna['seconds']['p90'])} | all up to date: {dna['all_up_to_date']} |",
            f"| old hook | {_n(old['requests']['max'], 0)} | {_ms(old['seconds']['median'])}"
            f" | {_ms(old['seconds']['p90'])} | runs both applies on every spawn;"
            f" failed {old['failed']} |",
        ]
    )


def storm_table(storms: list[dict[str, Any]]) -> str:
    lines = [
        "| users | succeeded | wall time, all ready | per-user p50 | per-user p99 |"
        " requests/spawn (mean) | worst loop stall (wall) | of it on the loop's CPU |"
        " loop lag p99 | hub CPU per spawn | RSS after (VmHWM) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in storms:
        hub_cpu = s["cpu_seconds"].get("hub (this process)", 0.0) / max(s["users"], 1)
        lines.append(
            f"| {s['users']} | {s['succeeded']}/{s['users']} | {_s(s['wall_seconds'])}"
            f" | {_s(s['per_user_seconds'].get('median'))}"
            f" | {_s(s['per_user_seconds'].get('p99'))}"
            f" | {_n(s['requests_per_spawn'].get('mean'))}"
            f" | {_n(s['loop_lag_max_ms'])} ms | {_n(s['loop_stall_on_cpu_max_ms'])} ms"
            f" (at {_n(s.get('loop_stall_worst_at_seconds'), 2)} s)"
            f" | {_n(s['loop_lag_p99_ms'])} ms | {_ms(hub_cpu)}"
            f" | {_mib(s['memory_kib_after'].get('VmRSS'))}"
            f" ({_mib(s['memory_kib_after'].get('VmHWM'))}) |"
        )
    return "\n".join(lines)


def phases_table(storms: list[dict[str, Any]]) -> str:
    names = list(storms[0]["phases_median"]) if storms else []
    lines = [
        "| users | render (median / max) | "
        + " | ".join(n.replace("_", " ") for n in names)
        + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for s in storms:
        lines.append(
            f"| {s['users']} | {_n(s['render_ms_median'])} / {_n(s['render_ms_max'])} ms | "
            + " | ".join(_ms(s["phases_median"][n]) for n in names)
            + " |"
        )
    return "\n".join(lines)


def cpu_table(dna: list[dict[str, Any]], old: list[dict[str, Any]]) -> str:
    rows = [
        (
            f"DnaSpawner, {s['users']} users"
            + ("" if s.get("render_in_loop", True) else ", pre-rendered"),
            s,
        )
        for s in dna
    ]
    rows += [(f"old method, {s['users']} users", s) for s in old]
    names: list[str] = []
    for _, s in rows:
        names += [n for n in s["cpu_seconds"] if n not in names]
    lines = [
        "| storm | wall | " + " | ".join(names) + " | total |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for label, s in rows:
        cpu = s["cpu_seconds"]
        lines.append(
            f"| {label} | {_s(s['wall_seconds'])} | "
            + " | ".join(_s(cpu.get(n)) if n in cpu else "–" for n in names)
            + f" | {_s(sum(cpu.values()))} |"
        )
    return "\n".join(lines)


def old_storm_table(storms: list[dict[str, Any]]) -> str:
    lines = [
        "| users | kubectl hooks at once | finished (ok) | wall time | per-user p50 |"
        " per-user p99 | requests/spawn | worst loop stall (wall / on CPU) |"
        " stopped by time cap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in storms:
        lines.append(
            f"| {s['users']} | {s['concurrency']} | {s['finished']} ({s['succeeded']})"
            f" | {_s(s['wall_seconds'])} | {_s(s['per_user_seconds'].get('median'))}"
            f" | {_s(s['per_user_seconds'].get('p99'))}"
            f" | {_n(s['requests_per_spawn'].get('mean'))}"
            f" | {_n(s['loop_lag_max_ms'])} / {_n(s['loop_stall_on_cpu_max_ms'])} ms"
            f" | {'yes, at ' + _s(s['time_cap_seconds']) if s['capped'] else 'no'} |"
        )
    return "\n".join(lines)


def _cell_text(cell: dict[str, Any]) -> str:
    if cell["outcome"] == "success":
        text = "✅ success" + (" after retry" if cell["hits"] else " (fault not hit)")
    else:
        text = ("❌ clear error" if cell.get("clear") else "⚠️ UNCLEAR error") + (
            "" if cell["exercised"] else " (fault not hit)"
        )
    text += "; next spawn " + ("converges" if cell.get("converged") else "**does not converge**")
    return text


def fault_table(f: dict[str, Any]) -> str:
    by_key = {(c["request"], c["fault"]): c for c in f["cells"]}
    lines = [
        "| request | " + " | ".join(f["faults"]) + " |",
        "|---|" + "---|" * len(f["faults"]),
    ]
    for row in f["rows"]:
        lines.append(
            f"| {row} | "
            + " | ".join(_cell_text(by_key[(row, fault)]) for fault in f["faults"])
            + " |"
        )
    errors = [c for c in f["cells"] if c["outcome"] != "success"]
    if errors:
        lines += ["", "The errors (what the user sees — what the admin sees in the hub log):", ""]
        seen = set()
        for c in errors:
            key = (c.get("user_message"), c["detail"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(
                f"- {c['request']} / {c['fault']}: “{c.get('user_message', '')}” — `{c['detail']}`"
            )
    return "\n".join(lines)


def fault_summary(f: dict[str, Any]) -> dict[str, int]:
    cells = f["cells"]
    return {
        "cells": len(cells),
        "success": sum(c["outcome"] == "success" for c in cells),
        "clear_error": sum(c["outcome"] == "error" and c.get("clear", False) for c in cells),
        "unclear_error": sum(c["outcome"] == "error" and not c.get("clear", False) for c in cells),
        "not_exercised": sum(not c["exercised"] for c in cells),
        "converged": sum(bool(c.get("converged")) for c in cells),
    }


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """``(target, goal, measured, met)``."""
    out = []
    first = results.get("first_spawn")
    if first:
        ratio = first["ratio_median"] or 0
        out.append(
            (
                "first spawn vs old method",
                f"≥ {TARGETS['first_spawn_ratio']:.0f}× faster",
                f"{ratio:.1f}× (median)",
                ratio >= TARGETS["first_spawn_ratio"],
            )
        )
        requests = first["repeat"]["dna"]["requests"]["max"]
        out.append(
            (
                "repeat spawn",
                f"≤ {TARGETS['repeat_requests']} requests",
                f"{requests:.0f} request(s), {_ms(first['repeat']['dna']['seconds']['median'])}",
                requests <= TARGETS["repeat_requests"],
            )
        )
    for key, what in (
        ("storms_prerendered", "ProfileProvisioner.ensure only"),
        ("storms", "render + ensure, as provision_profile"),
    ):
        storms = results.get(key) or []
        if not storms:
            continue
        largest = max(storms, key=lambda s: s["users"])
        out.append(
            (
                f"worst event-loop stall at {largest['users']} users ({what})",
                f"≤ {TARGETS['loop_lag_ms']:.0f} ms",
                f"{largest['loop_stall_on_cpu_max_ms']:.1f} ms on the loop's CPU "
                f"({largest['loop_lag_max_ms']:.1f} ms wall)",
                largest["loop_stall_on_cpu_max_ms"] <= TARGETS["loop_lag_ms"],
            )
        )
    faults = results.get("faults")
    if faults:
        s = fault_summary(faults)
        out.append(
            (
                "fault matrix",
                "every cell success or clear error; next spawn converges",
                f"{s['success']} success, {s['clear_error']} clear error, "
                f"{s['unclear_error']} unclear; {s['converged']}/{s['cells']} converge",
                s["unclear_error"] == 0 and s["converged"] == s["cells"],
            )
        )
    return out


def targets_table(results: dict[str, Any]) -> str:
    lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for name, goal, measured, met in targets(results):
        lines.append(f"| {name} | {goal} | {measured} | {'✅' if met else '❌'} |")
    return "\n".join(lines)


def results_markdown(results: dict[str, Any]) -> str:
    """Every table of a run (what the command prints)."""
    m = results["machine"]
    cfg = results["config"]
    parts = [
        f"Run {m['date']} on {m['nproc']} × {m['cpu']}, {m['memory_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; kubectl: {cfg['kubectl']}; control plane: "
        f"kube-apiserver {cfg['kube_version']} + etcd on 127.0.0.1; profile-controller stand-in "
        f"with {cfg['profile_workers']} workers. Command: `{cfg['command']}`.",
        "",
        "### Targets",
        "",
        targets_table(results),
    ]
    if "first_spawn" in results:
        parts += [
            "",
            "### 1. First-spawn provisioning latency",
            "",
            first_spawn_table(results["first_spawn"]),
            "",
            "### 2. Repeat spawn (profile up to date)",
            "",
            repeat_table(results["first_spawn"]),
        ]
    if results.get("storms"):
        parts += [
            "",
            "### 3. Login storm — DnaSpawner, all users in one event loop",
            "",
            "All spawns start at once (one `asyncio.gather`), each rendering its templates"
            " (in a worker thread) and then provisioning, as `DnaSpawner.provision_profile`"
            " does:",
            "",
            storm_table(results["storms"]),
            "",
            "The same with the templates rendered before the clock starts, so that only"
            " `ProfileProvisioner.ensure` runs in the storm:",
            "",
            storm_table(results.get("storms_prerendered") or []),
            "",
            "Median time per phase of one user's provisioning during the storm (`render` is "
            "`render_profile`, which `DnaSpawner.provision_profile` runs in a worker thread;"
            " *write profile* includes the wait for one of the `max_concurrent_provisioning`"
            " slots):",
            "",
            phases_table(results["storms"]),
        ]
    if results.get("old_storms"):
        parts += [
            "",
            "### 3b. Login storm — old method (one kubectl subprocess at a time per hook)",
            "",
            old_storm_table(results["old_storms"]),
            "",
            f"Old-method concurrency is capped at {results['old_storm_concurrency_limit']} hooks"
            f" at once: kubectl's peak RSS here is {_mib(results['kubectl_peak_rss_kib'])} per"
            " process, and the cap keeps them within half of the available memory.",
        ]
    if results.get("storms") or results.get("old_storms"):
        parts += [
            "",
            "CPU seconds used during each storm, per process (2 cores: at most 2 s per second"
            " of wall time in all):",
            "",
            cpu_table(
                (results.get("storms") or []) + (results.get("storms_prerendered") or []),
                results.get("old_storms") or [],
            ),
        ]
    if results.get("memory"):
        mem = results["memory"]
        parts += [
            "",
            "### 4. Memory",
            "",
            "| when | VmRSS | VmHWM (peak) |",
            "|---|---|---|",
        ]
        for when, kib in mem["points"]:
            parts.append(f"| {when} | {_mib(kib.get('VmRSS'))} | {_mib(kib.get('VmHWM'))} |")
        tm = mem.get("tracemalloc")
        if tm:
            parts += [
                "",
                f"tracemalloc, a separate {tm['users']}-user storm: Python heap peak "
                f"{tm['peak_mib']:.1f} MiB above the baseline ({tm['peak_kib_per_user']:.0f} KiB "
                f"per concurrent spawn), {tm['retained_mib']:.1f} MiB still allocated after it.",
            ]
    if results.get("faults"):
        f = results["faults"]
        parts += [
            "",
            "### 5. Fault matrix",
            "",
            f"Each cell: a brand-new user's provisioning through the fault proxy with the fault "
            f"injected once into the first matching request (hub defaults: request timeout "
            f"{f['request_timeout']:.0f} s, {f['retry_policy']}; `timeout` holds the request "
            f"{f['request_timeout'] + 2:.0f} s), then the next spawn — `ensure(force=True)`, no "
            "faults — and a check that every object exists and the digest is recorded.",
            "",
            fault_table(f),
        ]
    return "\n".join(parts) + "\n"
