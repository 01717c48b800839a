"""Medians over rounds, ratios to the baseline, targets, and the markdown tables."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from .scenarios import SCENARIOS, Scenario

# A measurement with more failed requests than this is reported, and its target not counted.
MAX_ERROR_RATE = 0.01
SCALE_TARGET = 0.9  # 1M stored sessions against 1k: req/s stays flat (issue 16)


def scale_label(sessions: int) -> str:
    if sessions >= 1_000_000 and sessions % 1_000_000 == 0:
        return f"{sessions // 1_000_000}M"
    if sessions >= 1_000 and sessions % 1_000 == 0:
        return f"{sessions // 1_000}k"
    return str(sessions)


def _by_round(measurements: list[dict], scenario: str) -> dict[int, dict[str, dict]]:
    rounds: dict[int, dict[str, dict]] = defaultdict(dict)
    for entry in measurements:
        if entry["scenario"] == scenario:
            rounds[entry["round"]][entry["target"]] = entry
    return rounds


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarise_target(measurements: list[dict], scenario: str, target: str) -> dict[str, Any]:
    rows = [
        (entries["baseline"], entries[target])
        for entries in _by_round(measurements, scenario).values()
        if "baseline" in entries and target in entries
    ]
    if not rows:
        return {}
    results = [result for _, result in rows]
    errors = sum(result["errors"] for result in results)
    requests = sum(result["requests"] for result in results)
    return {
        "rounds": len(rows),
        "rps": _median([result["rps"] for result in results]),
        "p50_ms": _median([result["p50_ms"] for result in results]),
        "p90_ms": _median([result["p90_ms"] for result in results]),
        "p99_ms": _median([result["p99_ms"] for result in results]),
        "baseline_rps": _median([base["rps"] for base, _ in rows]),
        "baseline_p99_ms": _median([base["p99_ms"] for base, _ in rows]),
        "ratio": _median([result["rps"] / base["rps"] for base, result in rows if base["rps"]]),
        "cpu_ms": _median([r["server_cpu_ms"] for r in results if r.get("server_cpu_ms")]),
        "baseline_cpu_ms": _median(
            [base["server_cpu_ms"] for base, _ in rows if base.get("server_cpu_ms")]
        ),
        # Baseline CPU per request over codexweb's: the ratio with the noise of the machine
        # taken out (req/s moves with whatever else runs; CPU time per request far less).
        "cpu_ratio": _median(
            [
                base["server_cpu_ms"] / result["server_cpu_ms"]
                for base, result in rows
                if base.get("server_cpu_ms") and result.get("server_cpu_ms")
            ]
        ),
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
    }


def summarise(
    chosen: list[Scenario],
    measurements: list[dict],
    skipped: dict[str, str],
    targets: list[str],
    database: str,
) -> dict[str, dict]:
    """Per scenario, at the smallest scale: medians, ratio, targets (those of `database`) and
    whether they are met."""
    summary = {}
    for scenario in chosen:
        entry: dict[str, Any] = {"label": scenario.label, "note": scenario.note}
        if scenario.key in skipped:
            entry["skipped"] = skipped[scenario.key]
        else:
            entry.update(summarise_target(measurements, scenario.key, targets[0]))
            entry["targets"] = _targets(scenario, entry, database)
        summary[scenario.key] = entry
    return summary


def _targets(scenario: Scenario, entry: dict, database: str) -> dict[str, dict]:
    valid = (entry.get("error_rate") or 0) <= MAX_ERROR_RATE
    targets = {}
    wanted = (scenario.target_ratio or {}).get(database)
    if wanted is not None and entry.get("ratio") is not None:
        targets["ratio"] = {"want": f">= {wanted}", "met": valid and entry["ratio"] >= wanted}
    return targets


def scale_summary(
    chosen: list[Scenario], measurements: list[dict], skipped: dict[str, str], targets: list[str]
) -> dict[str, dict]:
    """Per scaled scenario: each scale's medians, and largest/smallest as the median of the
    per-round ratios (both measured minutes apart at most, in the same round)."""
    summary = {}
    if len(targets) < 2:
        return summary
    smallest, largest = targets[0], targets[-1]
    for scenario in chosen:
        if not scenario.scaled or scenario.key in skipped:
            continue
        rounds = _by_round(measurements, scenario.key).values()
        ratios = [
            entries[largest]["rps"] / entries[smallest]["rps"]
            for entries in rounds
            if smallest in entries and largest in entries and entries[smallest]["rps"]
        ]
        ratio = _median(ratios)
        cpu_ratios = [
            entries[smallest]["server_cpu_ms"] / entries[largest]["server_cpu_ms"]
            for entries in rounds
            if smallest in entries
            and largest in entries
            and entries[smallest].get("server_cpu_ms")
            and entries[largest].get("server_cpu_ms")
        ]
        summary[scenario.key] = {
            "label": scenario.label,
            "scales": {
                name: summarise_target(measurements, scenario.key, name) for name in targets
            },
            "ratio_name": f"{largest}/{smallest}",
            "ratio": ratio,
            # CPU per request at the smallest scale over the largest's (1.0: no growth).
            "cpu_ratio": _median(cpu_ratios),
            "target": {
                "want": f">= {SCALE_TARGET}",
                "met": ratio is not None and ratio >= SCALE_TARGET,
            },
        }
    return summary


# Markdown --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _verdict(targets: dict[str, dict]) -> str:
    if not targets:
        return ""
    return " ".join(
        f"{'✅' if target['met'] else '❌'} {name} {target['want']}"
        for name, target in targets.items()
    )


def markdown(results: dict) -> str:
    settings = results["settings"]
    meta = results.get("meta", {})
    lines = [
        f"### codexweb vs bare Flask ({settings['database']}, "
        f"{settings['gunicorn']['workers']} {settings['gunicorn']['worker_class']} workers, "
        f"{settings['wrk']['connections']} connections, median of {settings['rounds']} rounds "
        f"× {settings['seconds_per_measurement']:g} s)",
        "",
        "| scenario | req/s | p50 ms | p90 ms | p99 ms | baseline req/s | ratio "
        "| CPU ms/req (baseline) | CPU ratio | targets |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in results["scenarios"].values():
        if "skipped" in entry:
            lines.append(f"| {entry['label']} | skipped: {entry['skipped']} | | | | | | | | |")
            continue
        errors = ""
        if entry.get("errors"):
            errors = f" ({entry['errors']} errors, {entry['error_rate']:.2%})"
        lines.append(
            f"| {entry['label']} | {_number(entry.get('rps'))}{errors} | "
            f"{_number(entry.get('p50_ms'), 1)} | {_number(entry.get('p90_ms'), 1)} | "
            f"{_number(entry.get('p99_ms'), 1)} | {_number(entry.get('baseline_rps'))} | "
            f"{_number(entry.get('ratio'), 2)} | {_number(entry.get('cpu_ms'), 2)} "
            f"({_number(entry.get('baseline_cpu_ms'), 2)}) | {_number(entry.get('cpu_ratio'), 2)} "
            f"| {_verdict(entry.get('targets', {}))} |"
        )
    if results.get("scale"):
        names = list(next(iter(results["scale"].values()))["scales"])
        lines += [
            "",
            "### Scale: stored sessions (req/s; p99 ms; server CPU ms/req)",
            "",
            "| endpoint | "
            + " | ".join(names)
            + f" | {next(iter(results['scale'].values()))['ratio_name']} req/s | CPU |",
            "| --- | " + " | ".join("---:" for _ in names) + " | --- | ---: |",
        ]
        for entry in results["scale"].values():
            cells = [
                f"{_number(scale.get('rps'))}; {_number(scale.get('p99_ms'), 1)}; "
                f"{_number(scale.get('cpu_ms'), 2)}"
                for scale in entry["scales"].values()
            ]
            verdict = "✅" if entry["target"]["met"] else "❌"
            lines.append(
                f"| {entry['label']} | {' | '.join(cells)} | "
                f"{_number(entry['ratio'], 2)} {verdict} {entry['target']['want']} | "
                f"{_number(entry.get('cpu_ratio'), 2)} |"
            )
    if settings.get("extra_env"):
        lines += [
            "",
            f"codexweb environment changed for this run: {', '.join(settings['extra_env'])}.",
        ]
    cost = results.get("password_hash")
    if cost:
        lines += [
            "",
            f"Password hashing in-process ({cost['method']}, median of {cost['samples']}): "
            f"hash {cost['hash_ms']} ms, check {cost['check_ms']} ms.",
        ]
    seeding = results.get("seeding", {})
    if seeding:
        lines.append(
            "Seeding: "
            + ", ".join(f"{name} in {entry['seconds']} s" for name, entry in seeding.items())
            + "."
        )
    machine = meta.get("machine")
    if machine:
        lines.append(
            f"Machine: {machine['cpus']} CPUs, load average {machine['loadavg_before'][0]} before, "
            f"{machine['loadavg_after'][0]} after; commit {meta.get('commit')}, "
            f"{meta.get('started_at')}."
        )
    return "\n".join(lines) + "\n"


__all__ = ["SCENARIOS", "markdown", "scale_label", "scale_summary", "summarise"]
