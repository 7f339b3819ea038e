# ruff: noqa: RUF001 - typographic signs (multiplication sign, en dash) are intended
"""Markdown tables from a benchmark run's results, and the BENCHMARKS.md page around them."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "first_spawn_ratio": 10.0,
    "repeat_requests": 2,  # Profile + namespace owner check, concurrent (issue 18)
    "loop_lag_ms": 20.0,
    "render_ms": 0.5,
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
        f"**Hub side:** dna_hub's own time — the whole provisioning minus the time it"
        f" only waited for the profile controller (namespace, `default-editor`) —"
        f" median {_ms(r['own']['median'])} (p90 {_ms(r['own']['p90'])}): the old hook"
        f" takes **{_n(r['own_ratio_median'])}×** as long. Objects applied: {r['objects']}.",
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


METHOD_NAMES = {
    "stock": "stock KubeSpawner (namespaces exist)",
    "dna": "DnaSpawner (new users: profile + pod)",
    "old": "old hook + KubeSpawner (new users)",
}


def spawn_storm_table(storms: list[dict[str, Any]]) -> str:
    lines = [
        "| users | method | pods Running | spawns that failed first (retried) |"
        " time until every pod Running | per-user p50 |"
        " per-user p99 | API requests per spawn | hub CPU per spawn | worst loop stall"
        " (wall) | of it on the loop's CPU | loop lag p99 | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in storms:
        for method in ("stock", "dna", "old"):
            s = size.get(method)
            if not s:
                continue
            cpu = _ms(s["hub_cpu_ms_per_spawn"] / 1000)
            if s.get("kubectl_cpu_ms_per_spawn"):
                cpu += f" + kubectl {_ms(s['kubectl_cpu_ms_per_spawn'] / 1000)}"
            failed = f" ({s['failed']} never started)" if s["failed"] else ""
            lines.append(
                f"| {s['users']} | {METHOD_NAMES[method]}"
                f" | {s['pods_running_after']}/{s['users']}{failed}"
                f" | {s['users'] - s['succeeded_first_try']}"
                f" | {_s(s['wall_seconds']) if not s['failed'] else '– (not all)'}"
                f" | {_s(s['per_user_seconds'].get('median'))}"
                f" | {_s(s['per_user_seconds'].get('p99'))}"
                f" | {_n(s['requests_per_spawn'])} | {cpu}"
                f" | {_n(s['loop_lag_max_ms'])} ms | {_n(s['loop_stall_on_cpu_max_ms'])} ms"
                f" | {_n(s['loop_lag_p99_ms'])} ms | {_mib(s['peak_rss_kib'])} |"
            )
    return "\n".join(lines)


def overhead_table(storms: list[dict[str, Any]]) -> str:
    lines = [
        "| users | time until every pod Running: DnaSpawner ÷ stock | extra per spawn |"
        " per-user p50: DnaSpawner ÷ stock | hub CPU per spawn, extra | API requests per"
        " spawn, extra |",
        "|---|---|---|---|---|---|",
    ]
    for size in storms:
        o = size.get("overhead")
        if not o:
            continue
        lines.append(
            f"| {size['users']} | {_n(o['all_running_ratio'], 2)}×"
            f" | {_n(o['all_running_ms_per_spawn'], 0)} ms"
            f" | {_n(o['p50_ratio'], 2)}× | {_n(o['hub_cpu_ms_per_spawn'], 1)} ms"
            f" | {_n(o['requests_per_spawn'], 1)} |"
        )
    return "\n".join(lines)


def cluster_cpu_table(storms: list[dict[str, Any]]) -> str:
    rows = [(size[m], m) for size in storms for m in ("stock", "dna", "old") if size.get(m)]
    names: list[str] = []
    for s, _ in rows:
        names += [n for n in s["cluster_cpu_seconds"] if n not in names]
    lines = [
        "| storm | wall | hub | kubectl | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for s, method in rows:
        n = s["users"]
        lines.append(
            f"| {n} × {method} | {_s(s['wall_seconds'])}"
            f" | {_s(s['hub_cpu_ms_per_spawn'] * n / 1000)}"
            f" | {_s(s['kubectl_cpu_ms_per_spawn'] * n / 1000)} | "
            + " | ".join(_s(s["cluster_cpu_seconds"].get(k)) for k in names)
            + " |"
        )
    return "\n".join(lines)


def stall_table(storms: list[dict[str, Any]]) -> str:
    """GC passes and the longest loop callbacks of the largest storm, per method."""
    if not storms:
        return ""
    size = max(storms, key=lambda s: s["users"])
    lines = [
        f"{size['users']} users. Full (generation 2) garbage collections, and the loop's"
        " longest callbacks by CPU (with the GC time inside them):",
        "",
        "| method | gen-2 passes (on the loop thread) | longest gen-2 on the loop thread |"
        " longest gen-2 elsewhere | gen-1 / gen-0 longest on the loop thread |"
        " longest callbacks: CPU ms (of it GC) — what | inside the worst stall on the loop's"
        " CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("stock", "dna", "old"):
        s = size.get(method)
        if not s:
            continue
        gc = s["stalls"]["gc"]
        top = "; ".join(
            f"{c['cpu_ms']:.0f} ({c['gc_ms']:.0f}) — {c['what']}"
            for c in s["stalls"]["longest_callbacks"][:3]
        )
        lines.append(
            f"| {method} | {gc['2']['passes']} ({gc['2']['on_loop_thread']})"
            f" | {_n(gc['2']['max_ms_on_loop_thread'])} ms"
            f" | {_n(gc['2']['max_ms_other_threads'])} ms"
            f" | {_n(gc['1']['max_ms_on_loop_thread'])} / {_n(gc['0']['max_ms_on_loop_thread'])} ms"
            f" | {top} | {_inside(s['stalls'].get('worst_on_cpu'))} |"
        )
    return "\n".join(lines)


def _inside(window: dict[str, Any] | None) -> str:
    if not window:
        return "–"
    young = [c for c in window["collections"] if c["generation"] < 2]
    parts = [
        f"gen-2 GC {c['ms']:.0f} ms"
        + (" on the loop thread" if c["on_loop_thread"] else " on another thread")
        for c in window["collections"]
        if c["generation"] == 2
    ]
    if young:
        parts.append(f"{len(young)} young GC passes, {sum(c['ms'] for c in young):.0f} ms")
    parts += [f"{c['what']} ({c['cpu_ms']:.0f} ms CPU)" for c in window["callbacks"][:2]]
    return f"{window['ms']:.0f} ms: " + ("; ".join(parts) or "no GC pass, no callback ≥ 5 ms")


def census_table(storms: list[dict[str, Any]]) -> str:
    size = next((s for s in reversed(storms) if s.get("census")), None)
    if not size:
        return ""
    census = size["census"]
    lines = [
        f"What the first full collections of a separate {census['users']}-user DnaSpawner storm"
        " walked (GC-tracked objects not frozen, by type; counting them costs loop time, so"
        " this storm is not one of the measured ones):",
        "",
        "| pass | objects walked | frozen (start-up heap, not walked) | most common types |",
        "|---|---|---|---|",
    ]
    for index, taken in enumerate(census["passes"] or [], 1):
        top = ", ".join(f"{name} {count:,}" for name, count in taken["top"][:10])
        lines.append(f"| {index} | {taken['tracked']:,} | {taken['frozen']:,} | {top} |")
    after = census["heap_after"]
    lines += [
        "",
        f"After that storm: {after['gc_tracked_objects']:,} objects walked by a full pass, "
        + "; ".join(
            f"{key}: {value['resources']} objects, {value['tracked']:,} tracked"
            for key, value in after.items()
            if isinstance(value, dict)
        )
        + ".",
    ]
    return "\n".join(lines)


def storm_errors(storms: list[dict[str, Any]]) -> str:
    lines = []
    for size in storms:
        for method in ("stock", "dna", "old"):
            s = size.get(method)
            if s and s["errors"]:
                for error, count in s["errors"]:
                    lines.append(f"- {size['users']} × {method}: {count} attempts: `{error}`")
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


def _stall_verdict(size: dict[str, Any]) -> tuple[str, bool]:
    dna, stock = size["dna"], size.get("stock")
    measured = (
        f"DnaSpawner {dna['loop_stall_on_cpu_max_ms']:.1f} ms on the loop's CPU "
        f"({dna['loop_lag_max_ms']:.1f} ms wall)"
    )
    if stock:
        measured += (
            f"; stock KubeSpawner {stock['loop_stall_on_cpu_max_ms']:.1f} ms "
            f"({stock['loop_lag_max_ms']:.1f} ms wall)"
        )
    met = dna["loop_stall_on_cpu_max_ms"] <= TARGETS["loop_lag_ms"] or bool(
        stock
        and stock["loop_stall_on_cpu_max_ms"] > TARGETS["loop_lag_ms"]
        and dna["loop_stall_on_cpu_max_ms"] <= stock["loop_stall_on_cpu_max_ms"]
    )
    return measured, met


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """``(target, goal, measured, met)``."""
    out = fullstack_targets(results)
    first = results.get("first_spawn")
    if first:
        ratio = first.get("own_ratio_median") or 0
        out.append(
            (
                "first spawn, hub side: dna_hub's own time (all but waiting for the profile "
                "controller) vs the old hook",
                f"≥ {TARGETS['first_spawn_ratio']:.0f}× less",
                f"{ratio:.1f}× ({_ms(first['own']['median'])} vs "
                f"{_ms(first['old']['seconds']['median'])}, medians); whole first spawn "
                f"{first['ratio_median']:.1f}×",
                ratio >= TARGETS["first_spawn_ratio"],
            )
        )
        requests = first["dna"]["requests"]["max"]
        limit = first["objects"] + 3
        out.append(
            (
                "first spawn, API requests",
                f"≤ objects + 3 = {limit}",
                f"{requests:.0f} (max; median {first['dna']['requests']['median']:.0f}) for "
                f"{first['objects']} objects",
                requests <= limit,
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
    render = results.get("render")
    if render:
        out.append(
            (
                "rendering a profile",
                f"≤ {TARGETS['render_ms']} ms (absolute, not a ratio: scales with the CPU)",
                f"{render['ms_per_profile']:.3f} ms (CPU, median of {len(render['runs_ms'])} "
                f"runs of {render['profiles']})",
                render["ms_per_profile"] <= TARGETS["render_ms"],
            )
        )
    storms = [s for s in results.get("spawn_storms") or [] if s.get("dna")]
    if storms:
        largest = max(storms, key=lambda s: s["users"])
        measured, met = _stall_verdict(largest)
        out.append(
            (
                f"worst event-loop stall at {largest['users']} users (whole spawn)",
                f"≤ {TARGETS['loop_lag_ms']:.0f} ms on the loop's CPU, or no worse than stock"
                " KubeSpawner when that alone is worse",
                measured,
                met,
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


def _cells(rows: list[tuple[str, str, str, bool]]) -> list[tuple[str, str, str, bool]]:
    """Table cells: a measured text may quote an error with a ``|`` in it."""
    return [(n, g, m.replace("|", "\\|"), met) for n, g, m, met in rows]


def targets_table(results: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The targets and verdicts; with ``previous`` (another full run), its verdicts beside."""
    if previous is None:
        lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
        for name, goal, measured, met in _cells(targets(results)):
            lines.append(f"| {name} | {goal} | {measured} | {'✅' if met else '❌'} |")
        return "\n".join(lines)
    other = {name: (measured, met) for name, _, measured, met in _cells(targets(previous))}
    lines = [
        "| target | goal | measured | met | the other run: measured | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, goal, measured, met in _cells(targets(results)):
        then, then_met = other.get(name, ("not measured", None))
        mark = "–" if then_met is None else ("✅" if then_met else "❌")
        lines.append(
            f"| {name} | {goal} | {measured} | {'✅' if met else '❌'} | {then} | {mark} |"
        )
    return "\n".join(lines)


def results_markdown(results: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
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
        *(
            [
                "Beside each verdict, the same target in the other full run"
                f" (`{previous['config']['command']}` at {previous['machine']['date']}):"
                " the spread of two runs on this machine.",
                "",
            ]
            if previous
            else []
        ),
        targets_table(results, previous),
    ]
    parts += fullstack_markdown(results, previous)
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
    if results.get("render"):
        r = results["render"]
        parts += [
            "",
            "### 3. Rendering",
            "",
            f"`render_profile` with the default templates: {r['ms_per_profile']:.3f} ms of CPU"
            f" per profile (median of runs: "
            + ", ".join(f"{v:.3f}" for v in r["runs_ms"])
            + f" ms; {r['profiles']} distinct users per run, templates compiled before).",
        ]
    if results.get("spawn_storms"):
        storms = results["spawn_storms"]
        parts += [
            "",
            "### 4. Login storms: stock KubeSpawner, DnaSpawner, old hook",
            "",
            "N users start their servers at once (one `asyncio.gather` in one hub process,"
            " a fresh process per storm). A spawn ends when `start()` returns: the pod is"
            " Running with its IP.",
            "",
            spawn_storm_table(storms),
            "",
            "**DnaSpawner's overhead over stock KubeSpawner:**",
            "",
            overhead_table(storms),
        ]
        errors = storm_errors(storms)
        if errors:
            parts += [
                "",
                "Failed attempts (a user whose spawn fails starts it again, up to 3 attempts;"
                " the time until every pod is Running includes those retries):",
                "",
                errors,
            ]
        parts += [
            "",
            "CPU seconds used during each storm by the hub, its kubectl processes and the"
            " cluster's processes (2 cores: at most 2 s per second of wall time in all):",
            "",
            cluster_cpu_table(storms),
            "",
            "#### Where the stalls come from",
            "",
            stall_table(storms),
            "",
            census_table(storms),
        ]
        if results.get("old_hook_concurrency_limit"):
            parts += [
                "",
                f"The old hook's kubectl processes are capped at"
                f" {results['old_hook_concurrency_limit']} at once: kubectl's peak RSS here is"
                f" {_mib(results['kubectl_peak_rss_kib'])}, and the cap keeps them within half"
                " of the available memory.",
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


# ---------------------------------------------------------------- full-stack storms

#: DnaSpawner ÷ stock KubeSpawner for returning users, and extra Kubernetes requests.
RETURNING_RATIO = 1.10
RETURNING_EXTRA_REQUESTS = 2.0
SPAWNER_NAMES = {"dna": "DnaSpawner", "stock": "stock KubeSpawner"}


def _kib_mib(kib: int | None) -> str:
    return "–" if not kib else f"{kib / 1024:,.0f} MiB"


def fullstack_table(sizes: list[dict[str, Any]]) -> str:
    lines = [
        '| users | method | storm | ready / failed (login failed) | 429s | "not running" pages'
        " (users) | all ready"
        " | time to ready p50 / p95 / p99 | login p50"
        " | hub pages (not `/hub/spawn`) / API p95, users"
        " | prober: `/hub/api/` / `/hub/home` p95 | hub CPU | hub peak RSS"
        " | proxy routes | kube requests / spawn |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for s in size["storms"]:
            t = s["time_to_ready"]
            p = s["prober"]
            lines.append(
                f"| {s['users']} | {SPAWNER_NAMES[s['method']]} | {s['label']} ({s['pattern']})"
                f" | {s['ready']} / {s['failed']} ({s['login_failed']}) | {s['refused_429']}"
                f" | {s['not_running_pages']} ({s['users_bounced']})"
                f" | {_s(s['all_ready_seconds'])}"
                f" | {_s(t.get('median'))} / {_s(s['time_to_ready_p95'])} / {_s(t.get('p99'))}"
                f" | {_s(s['login_seconds'].get('median'))}"
                f" | {s['user_page_p95_ms']:,.0f} / {s['user_api_p95_ms']:,.0f} ms"
                f" | {p['api_version_p95_ms']:,.0f} / {p['home_p95_ms']:,.0f} ms"
                f" | {s['cpu_seconds']['hub']:,.1f} s | {_kib_mib(s['hub_peak_rss_kib'])}"
                f" | {s['proxy_routes']} | {requests_per_spawn(s):.1f} |"
            )
    return "\n".join(lines)


def fullstack_ratio_table(sizes: list[dict[str, Any]], previous: dict[int, Any]) -> str:
    lines = [
        "| users | storm | all ready | p50 | p95 | hub CPU | extra kube requests / spawn"
        " | all-ready ratio in the other run (spread) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for label, r in ratios(size["storms"]).items():
            other = (previous.get(size["users"]) or {}).get(label)
            if other:
                spread = abs(r["all_ready"] - other["all_ready"]) / (
                    (r["all_ready"] + other["all_ready"]) / 2
                )
                other_text = f"{other['all_ready']:.2f}× ({spread:.0%})"
            else:
                other_text = "–"
            lines.append(
                f"| {size['users']} | {label} | {r['all_ready']:.2f}× | {_n(r['p50'], 2)}×"
                f" | {_n(r['p95'], 2)}× | {_n(r['hub_cpu'], 2)}×"
                f" | {r['extra_kube_requests_per_spawn']:+.1f} | {other_text} |"
            )
    return "\n".join(lines)


def reconcile_table(sizes: list[dict[str, Any]]) -> str:
    lines = [
        "| new users at once | profiles | p50 | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        for s in size["storms"]:
            r = s.get("reconcile")
            if r and r.get("n"):
                lines.append(
                    f"| {size['users']} | {r['n']} | {_s(r['median'])} | {_s(r['p95'])}"
                    f" | {_s(r['max'])} |"
                )
    return "\n".join(lines)


def fullstack_stalls(sizes: list[dict[str, Any]]) -> str:
    lines = [
        "| users | method | storm | worst loop stall (wall) | on the loop's CPU | callbacks"
        " run inside it | lag p99 | loop callbacks, mean CPU each | longest single"
        " callbacks: CPU ms (of it GC) — what | gen-2 GC passes on the loop thread, longest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for s in size["storms"]:
            h = s["hub_loop"]
            stalls = s.get("hub_stalls") or {}
            worst = stalls.get("worst_on_cpu") or {}
            top = "; ".join(
                f"{c['cpu_ms']:.0f} ({c['gc_ms']:.0f}) — {c['what']}"
                for c in (stalls.get("longest_callbacks") or [])[:2]
            )
            gen2 = (stalls.get("gc") or {}).get("2") or {}
            ran = h.get("loop_callbacks")
            mean = f"{ran} × {h['loop_callback_cpu_seconds'] / ran * 1e6:.0f} µs" if ran else "–"
            lines.append(
                f"| {s['users']} | {SPAWNER_NAMES[s['method']]} | {s['label']}"
                f" | {h['loop_lag_max_ms']:.1f} ms | {h['loop_stall_on_cpu_max_ms']:.1f} ms"
                f" | {worst.get('callbacks_run', '–')}"
                f" | {h['loop_lag_p99_ms']:.1f} ms | {mean} | {top or '–'}"
                f" | {gen2.get('on_loop_thread', '–')},"
                f" {_n(gen2.get('max_ms_on_loop_thread'))} ms |"
            )
    return "\n".join(lines)


def fullstack_stall_samples(sizes: list[dict[str, Any]], top: int = 6) -> str:
    """Stack samples of the long callbacks, largest size, per method and storm."""
    if not sizes:
        return ""
    size = max(sizes, key=lambda s: s["users"])
    lines = [
        f"{size['users']} users: where the hub's long callbacks (≥ 5 ms) spent the loop — the"
        " loop thread's stack sampled every 2 ms while one ran (innermost frame ← its nearest"
        " callers outside the standard library), top by time:",
        "",
        "| method | storm | sampled in long callbacks | by package (whose code asked) |"
        " top stacks: ms — where |",
        "|---|---|---|---|---|",
    ]
    for s in size["storms"]:
        stalls = s.get("hub_stalls") or {}
        if "sampled" not in stalls:
            continue
        where = "<br>".join(f"{x['ms']:.0f} — `{x['where']}`" for x in stalls["sampled"][:top])
        packages = ", ".join(
            f"{package} {ms:.0f} ms"
            for package, ms in list((stalls.get("sampled_packages_ms") or {}).items())[:4]
        )
        lines.append(
            f"| {SPAWNER_NAMES[s['method']]} | {s['label']}"
            f" | {stalls['sampled_in_long_callbacks_ms']:.0f} ms | {packages or '–'}"
            f" | {where or '–'} |"
        )
    return "\n".join(lines)


def _sampled_shares(stalls: dict[str, Any], top: int = 3) -> str:
    """``; long callbacks' sampled time: 71 % sqlalchemy, 9 % jupyterhub, …``."""
    packages = stalls.get("sampled_packages_ms") or {}
    total = sum(packages.values())
    if not total:
        return ""
    shares = sorted(packages.items(), key=lambda p: -p[1])[:top]
    dna = packages.get("dna_hub", 0.0)
    return (
        "; long callbacks' sampled time: "
        + ", ".join(f"{ms / total:.0%} {package}" for package, ms in shares)
        + f" (dna_hub {dna / total:.0%})"
    )


def _longest_callback(storm: dict[str, Any]) -> dict[str, Any]:
    callbacks = (storm.get("hub_stalls") or {}).get("longest_callbacks") or []
    return max(callbacks, key=lambda c: c["cpu_ms"], default={"cpu_ms": 0.0, "what": "–"})


def fullstack_stall_target(
    sizes: list[dict[str, Any]],
) -> tuple[str, str, str, bool] | None:
    """The whole hub's worst loop stall at the largest all-at-once new-user storm."""
    storms = [
        s
        for size in sizes
        for s in size["storms"]
        if s["method"] == "dna" and s["label"] == "new" and s.get("hub_stalls")
    ]
    if not storms:
        return None
    storm = max(storms, key=lambda s: s["users"])
    h = storm["hub_loop"]
    worst = storm["hub_stalls"].get("worst_on_cpu") or {}
    longest = _longest_callback(storm)
    stock = [
        s
        for size in sizes
        for s in size["storms"]
        if s["method"] == "stock" and s["label"] == "new" and s["users"] == storm["users"]
    ]
    measured = (
        f"{h['loop_stall_on_cpu_max_ms']:.0f} ms on the loop's CPU"
        f" ({h['loop_lag_max_ms']:.0f} ms wall), {worst.get('callbacks_run', '?')} callbacks"
        f" inside it; longest single callback {longest['cpu_ms']:.0f} ms ({longest['what']})"
        f"{_sampled_shares(storm['hub_stalls'])}"
    )
    if stock and stock[0].get("hub_stalls"):
        measured += (
            f"; stock KubeSpawner {stock[0]['hub_loop']['loop_stall_on_cpu_max_ms']:.0f} ms,"
            f" longest callback {_longest_callback(stock[0])['cpu_ms']:.0f} ms"
        )
    return (
        f"whole hub, {storm['users']} new users at once: worst event-loop stall",
        f"≤ {TARGETS['loop_lag_ms']:.0f} ms on the loop's CPU (absolute), or the measured reason",
        measured,
        h["loop_stall_on_cpu_max_ms"] <= TARGETS["loop_lag_ms"],
    )


def fullstack_errors(sizes: list[dict[str, Any]]) -> str:
    lines = []
    for size in sizes:
        for s in size["storms"]:
            for error, count in s["errors"]:
                lines.append(
                    f"* {s['users']} {SPAWNER_NAMES[s['method']]} {s['label']}: {count}× {error}"
                )
            if s.get("pods_left_behind"):
                lines.append(
                    f"* {s['users']} {SPAWNER_NAMES[s['method']]} {s['label']}:"
                    f" {s['pods_left_behind']} pod(s) left behind by spawns whose clean-up"
                    " failed too (no server running for them; deleted by the harness before"
                    " the next storm, a user's next spawn replaces its own)"
                )
        if failure := size.get("failure"):
            lines.append(
                f"* {size['users']} {SPAWNER_NAMES[failure['method']]}: the storms stopped"
                f" ({failure['error']}); no larger size was run"
            )
    return "\n".join(lines)


def fullstack_cpu(sizes: list[dict[str, Any]]) -> str:
    names = sorted({k for size in sizes for s in size["storms"] for k in s["cpu_seconds"]})
    lines = [
        "| users | method | storm | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for size in sizes:
        for s in size["storms"]:
            cells = " | ".join(f"{s['cpu_seconds'].get(k, 0):,.1f}" for k in names)
            lines.append(
                f"| {s['users']} | {SPAWNER_NAMES[s['method']]} | {s['label']} | {cells} |"
            )
    return "\n".join(lines)


def spawns_started(storm: dict[str, Any]) -> int:
    """Spawns that reached the pod's creation (each makes exactly one ``POST pods``): the
    denominator of requests per spawn, so a spawn that failed later counts its requests
    once instead of spreading them over the users who did get ready."""
    posted = storm.get("kube_requests_by_resource", {}).get("POST pods", 0)
    return max(1, posted or storm["ready"])


def requests_per_spawn(storm: dict[str, Any]) -> float:
    return sum(storm["kube_requests"].values()) / spawns_started(storm)


def ratios(storms: list[dict[str, Any]]) -> dict[str, Any]:
    """DnaSpawner / stock for each kind of storm of one size (one run, same machine)."""
    by = {(s["method"], s["label"]): s for s in storms}
    out: dict[str, Any] = {}
    for label in ("new", "returning", "returning ramp"):
        dna, stock = by.get(("dna", label)), by.get(("stock", label))
        if not dna or not stock or not stock["all_ready_seconds"]:
            continue
        out[label] = {
            "all_ready": dna["all_ready_seconds"] / stock["all_ready_seconds"],
            "p50": _safe(dna["time_to_ready"].get("median"), stock["time_to_ready"].get("median")),
            "p95": _safe(dna["time_to_ready_p95"], stock["time_to_ready_p95"]),
            "extra_kube_requests_per_spawn": requests_per_spawn(dna) - requests_per_spawn(stock),
            "hub_cpu": _safe(dna["cpu_seconds"]["hub"], stock["cpu_seconds"]["hub"]),
        }
    return out


def _safe(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def extra_requests_by_resource(dna: dict[str, Any], stock: dict[str, Any]) -> str:
    """Which requests DnaSpawner's spawns made beyond stock's, per ready spawn."""
    per = {}
    for key in set(dna["kube_requests_by_resource"]) | set(stock["kube_requests_by_resource"]):
        d = dna["kube_requests_by_resource"].get(key, 0) / spawns_started(dna)
        s = stock["kube_requests_by_resource"].get(key, 0) / spawns_started(stock)
        if abs(d - s) >= 0.05:
            per[key] = d - s
    ranked = sorted(per.items(), key=lambda kv: -abs(kv[1]))[:5]
    return ", ".join(f"{key} {value:+.2f}" for key, value in ranked) or "none"


def _worst_storm_errors(storms: list[dict[str, Any]]) -> str:
    """The storm with the most failures and its commonest reasons."""
    worst = max(storms, key=lambda s: s["failed"])
    if not worst["failed"]:
        return ""
    reasons = "; ".join(f"{count}× {error[:90]}" for error, count in worst["errors"][:2])
    return (
        f"; most in {worst['users']} {SPAWNER_NAMES[worst['method']]} {worst['label']}"
        f" ({worst['failed']}: {reasons})"
    )


def fullstack_targets(
    results: dict[str, Any],
) -> list[tuple[str, str, str, bool]]:
    out = []
    sizes = (results.get("fullstack") or {}).get("sizes") or []
    for size in sizes:
        ratio = ratios(size["storms"]).get("returning")
        if not ratio:
            continue
        by = {(s["method"], s["label"]): s for s in size["storms"]}
        dna, stock = by[("dna", "returning")], by[("stock", "returning")]
        out.append(
            (
                f"returning users, whole hub, {size['users']} at once: DnaSpawner vs stock"
                " KubeSpawner, time to all ready",
                f"≤ {RETURNING_RATIO:.2f}× (same run)",
                f"{ratio['all_ready']:.2f}× (p50 {_n(ratio['p50'], 2)}×, p95"
                f" {_n(ratio['p95'], 2)}×; hub CPU {_n(ratio['hub_cpu'], 2)}×); ready:"
                f" DnaSpawner {dna['ready']}, stock {stock['ready']} of {size['users']}",
                ratio["all_ready"] <= RETURNING_RATIO,
            )
        )
        out.append(
            (
                f"returning users, {size['users']}: extra Kubernetes requests per spawn",
                f"≤ {RETURNING_EXTRA_REQUESTS:.0f}",
                f"{ratio['extra_kube_requests_per_spawn']:+.1f}"
                f" ({extra_requests_by_resource(dna, stock)})",
                ratio["extra_kube_requests_per_spawn"] <= RETURNING_EXTRA_REQUESTS,
            )
        )
    stall = fullstack_stall_target(sizes)
    if stall:
        out.append(stall)
    if sizes:
        storms = [s for size in sizes for s in size["storms"]]
        failed = sum(s["failed"] for s in storms)
        out.append(
            (
                "full-stack storms: every user reaches a ready server",
                "0 failed",
                f"{failed} failed of {sum(s['users'] for s in storms)} user sessions"
                f" ({len(storms)} storms){_worst_storm_errors(storms)}",
                failed == 0,
            )
        )
    return out


def fullstack_markdown(results: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    fs = results.get("fullstack") or {}
    sizes = fs.get("sizes") or []
    if not sizes:
        return []
    prev = {
        s["users"]: ratios(s["storms"])
        for s in ((previous or {}).get("fullstack") or {}).get("sizes", [])
    }
    parts = [
        "",
        "### 0. Login storms through the whole hub",
        "",
        "Real OpenID provider, real `jupyterhub` + `configurable-http-proxy`, one HTTP client"
        " (own cookie jar) per user: log in, spawn, follow the progress stream, load"
        " `/user/<name>/api` through the proxy from the user's own pod (kubelet stand-in's"
        " `serve` runtime). *new*: users never seen before (DnaSpawner makes each profile;"
        " stock KubeSpawner spawns into the namespaces that storm made — the floor);"
        " *returning*: the same users again, the hub restarted on its database, servers"
        " stopped, profiles up to date. Hub `concurrent_spawn_limit` 64 (z2jh); a refused user"
        " retries after `Retry-After` with jitter.",
        "",
        fullstack_table(sizes),
        "",
        "**DnaSpawner ÷ stock KubeSpawner**, each ratio from one run on one machine"
        + (
            "; the last column is the same ratio in another full run"
            f" ({previous['config']['command']} at {previous['machine']['date']})"
            if previous
            else ""
        )
        + ":",
        "",
        fullstack_ratio_table(sizes, prev),
        "",
        "**The profile controller's reconcile latency** during the *new* storms (Profile"
        " ADDED → Namespace and ServiceAccount `default-editor` ADDED, from the admin's"
        " watches). Kubeflow's own profile controller cannot be built here (the Go module"
        " proxy refuses every version of `github.com/kubeflow/dashboard/components/*`:"
        " `devstack/gobuild/NOTES.md`), so this is **the stand-in's** latency"
        f" ({results['config']['profile_workers']} workers) on the real API server —"
        " not a figure for Kubeflow's controller:",
        "",
        reconcile_table(sizes),
        "",
        "The hub's event loop during each storm (measured inside the `jupyterhub` process,"
        " `tests/benchmarks/hub_probe.py`):",
        "",
        fullstack_stalls(sizes),
        "",
        fullstack_stall_samples(sizes),
        "",
        "CPU seconds per process during each storm (2 cores for everything, the load"
        " generator included):",
        "",
        fullstack_cpu(sizes),
    ]
    errors = fullstack_errors(sizes)
    if errors:
        parts += ["", "Users who did not reach a ready server, by reason:", "", errors]
    if fs.get("plot"):
        parts += ["", f"![time to ready]({fs['plot']})"]
    return parts


def plot_time_to_ready(results: dict[str, Any], path: Any) -> bool:
    """Box plots of time to ready per method, storm and size (PNG); False without data."""
    sizes = ((results.get("fullstack") or {}).get("sizes")) or []
    if not sizes:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        storms = [s for s in size["storms"] if s["time_to_ready_values"]]
        ax.boxplot(
            [s["time_to_ready_values"] for s in storms],
            whis=(1, 99),
            showfliers=False,
        )
        ax.set_xticks(
            range(1, len(storms) + 1),
            [f"{SPAWNER_NAMES[s['method']].replace(' ', chr(10))}\n{s['label']}" for s in storms],
            fontsize=7,
        )
        ax.set_title(f"{size['users']} users")
        ax.set_ylabel("seconds from arrival to /api ready")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Time to ready through the whole hub (whiskers p1–p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
