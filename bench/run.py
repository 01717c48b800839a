"""`make bench [ARGS=--quick]`: codexweb against bare Flask, side by side, in one run.

1. Starts the baseline (`bench/baseline.py`) and one codexweb per scale (1k, 100k and 1M stored
   sessions; `--quick`: 1k and 10k), each under `gunicorn -c gunicorn.conf.py` with the same
   settings (2 sync workers), on SQLite or, with `--db postgres`, on fresh PostgreSQL databases.
2. Bulk-seeds each database, probes every scenario, warms every server up.
3. Runs rounds: in each, every scenario's baseline is measured right before the scenario, with
   the same wrk load (threads, connections, duration); scaled scenarios rotate the order of the
   scales from round to round. Medians over the rounds are reported, ratios being medians of the
   per-round ratios.
4. Writes `bench/results/<timestamp>.json` and prints markdown tables.

See docs/PERFORMANCE.md for the method and the latest results.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask

from codexweb import create_app
from codexweb.auth.accounts import hash_password

from . import report, scenarios, wrk
from .scenarios import SCENARIOS, Scenario, Unavailable
from .seed import PASSWORD, Population, seed
from .servers import (
    DEFAULT_POSTGRES_ADMIN_URL,
    Fleet,
    GunicornSettings,
    PostgresDatabase,
    Server,
    SqliteDatabase,
    app_config,
    baseline_env,
    codexweb_server_env,
    migrate,
    start_gunicorn,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Rate-limit counters of `--db postgres` runs: a database of their own, never Redis's default 0.
BENCH_REDIS = "redis://127.0.0.1:6379/4"


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    seconds: int
    warmup_seconds: int
    scales: tuple[int, ...]
    connections: int = 32
    threads: int = 2
    api_users: int = 64
    hash_samples: int = 5
    # Scenarios run once before the rounds: each worker's first requests pay for imports,
    # template compilation, the signing key and the database connection.
    warm_up: tuple[str, ...] = ("healthz", "current", "token", "cycle", "page")


PLANS = {
    "full": Plan("full", rounds=3, seconds=5, warmup_seconds=1, scales=(1_000, 100_000, 1_000_000)),
    "quick": Plan(
        "quick",
        rounds=3,
        seconds=1,
        warmup_seconds=1,
        scales=(1_000, 10_000),
        hash_samples=3,
        warm_up=("token", "page"),  # token's path covers the API's first-request costs
    ),
}


@dataclass
class Target:
    """One codexweb server and what it was seeded with."""

    scale: int
    server: Server
    population: Population
    app: Flask
    data: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return report.scale_label(self.scale)

    @property
    def health_url(self) -> str:
        return self.server.url + "/healthz"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    wrk.wrk_path()
    workdir = Path(tempfile.mkdtemp(prefix="codexweb-bench-"))
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    log(f"bench: {plan.name} plan, {args.db}, work folder {workdir}")
    try:
        with Fleet() as fleet:
            results = run_plan(plan, args, workdir, fleet)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"] = meta(plan, args, started, load_before)
    path = write_results(results, started)
    print(report.markdown(results))
    log(f"results: {path}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: 1 s rounds")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CODEXWEB_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the server to create the bench databases on (dropped after)",
    )
    parser.add_argument(
        "--ratelimit-storage",
        help="flask-limiter storage (default: memory:// on SQLite, Redis with --db postgres)",
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=int, help="length of one measurement (whole seconds)")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both apps)")
    parser.add_argument(
        "--worker-class",
        choices=("gthread", "sync"),
        default="gthread",
        help="gunicorn worker class of both apps (gthread: gunicorn.conf.py's default)",
    )
    parser.add_argument("--threads", type=int, default=24, help="gthread threads (both apps)")
    parser.add_argument("--scales", help="comma-separated session counts, e.g. 1000,1000000")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios among {','.join(scenarios.SCENARIO_KEYS)}"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the codexweb servers, e.g. CODEXWEB_RATELIMIT_ENABLED=false",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    parser.add_argument(
        "--profile",
        help="after the rounds, measure these scenarios once more under py-spy (comma-separated)",
    )
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = PLANS["quick" if args.quick else "full"]
    changes: dict[str, Any] = {}
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.connections:
        changes["connections"] = args.connections
    if args.scales:
        changes["scales"] = tuple(sorted(int(value) for value in args.scales.split(",")))
    if not changes:
        return plan
    return Plan(**{**plan.__dict__, **changes, "name": f"{plan.name} (adjusted)"})


def selected_scenarios(args: argparse.Namespace) -> list[Scenario]:
    if not args.only:
        return list(SCENARIOS)
    wanted = set(args.only.split(","))
    unknown = wanted - set(scenarios.SCENARIO_KEYS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return [scenario for scenario in SCENARIOS if scenario.key in wanted]


# Setting up ------------------------------------------------------------------------------


def run_plan(plan: Plan, args: argparse.Namespace, workdir: Path, fleet: Fleet) -> dict:
    gunicorn = GunicornSettings(
        workers=args.workers, worker_class=args.worker_class, threads=args.threads
    )
    load = wrk.Load(threads=plan.threads, connections=plan.connections, seconds=plan.seconds)
    storage = args.ratelimit_storage or (BENCH_REDIS if args.db == "postgres" else "memory://")
    baseline = fleet.server(
        start_gunicorn("baseline", "bench.baseline:app", baseline_env(gunicorn), workdir, "/")
    )
    baseline_data = scenarios.write_lines(workdir / "baseline.tsv", scenarios.baseline_lines())
    password_hash = hash_password(PASSWORD)
    targets = [
        start_target(scale, plan, args, workdir, fleet, gunicorn, storage, password_hash)
        for scale in plan.scales
    ]
    chosen = selected_scenarios(args)
    skipped = prepare(chosen, targets, workdir)
    runnable = [scenario for scenario in chosen if scenario.key not in skipped]
    log("warming up")
    warm = wrk.Load(load.threads, load.connections, plan.warmup_seconds)
    # Login has nothing to warm up, and the logins wrk leaves queued take seconds to drain.
    for scenario in [s for s in runnable if s.key in plan.warm_up]:
        for target in targets_of(scenario, targets):
            measure(scenario, target, warm, round_="warmup")
    wrk.run(baseline.url, "requests.lua", baseline_data, warm)
    rounds = run_rounds(plan, runnable, targets, baseline, baseline_data, load)
    profiles = {}
    if args.profile:
        wanted = set(args.profile.split(","))
        for scenario in [s for s in runnable if s.key in wanted]:
            profiles[scenario.key] = profile(scenario, targets[-1 if scenario.scaled else 0], load)
    return {
        "profiles": profiles,
        "measurements": rounds,
        "scenarios": report.summarise(chosen, rounds, skipped, [t.name for t in targets], args.db),
        "scale": report.scale_summary(chosen, rounds, skipped, [t.name for t in targets]),
        "password_hash": password_hash_cost(targets[0].app, plan.hash_samples),
        "seeding": {
            target.name: {
                "sessions": target.population.sessions,
                "seconds": round(target.population.seconds, 2),
                **target.population.details,
            }
            for target in targets
        },
        "settings": {
            "gunicorn": {"workers": gunicorn.workers, "worker_class": gunicorn.worker_class},
            "wrk": {"threads": load.threads, "connections": load.connections},
            "seconds_per_measurement": plan.seconds,
            "rounds": plan.rounds,
            "database": args.db,
            "ratelimit_storage": storage.split("://")[0],
            "rate_limits": "every CODEXWEB_RATELIMIT_* at 1000000/minute",
            "extra_env": args.set,
        },
    }


def start_target(
    scale: int,
    plan: Plan,
    args: argparse.Namespace,
    workdir: Path,
    fleet: Fleet,
    gunicorn: GunicornSettings,
    storage: str,
    password_hash: str,
) -> Target:
    instance = workdir / f"codexweb-{scale}"
    instance.mkdir()
    database = fleet.database(
        PostgresDatabase(args.postgres_url) if args.db == "postgres" else SqliteDatabase(instance)
    )
    env = codexweb_server_env(instance, database, gunicorn, storage)
    env.update(dict(item.split("=", 1) for item in args.set))
    migrate(env)
    app = create_app(app_config(database))
    log(f"seeding {report.scale_label(scale)} sessions")
    population = seed(
        app,
        total_sessions=scale,
        api_users=plan.api_users,
        cycle_rounds=plan.rounds + 3,  # and one set each for the probe, warm-up and profile
        cycle_users_per_round=plan.connections,
        password_hash=password_hash,
    )
    log(f"  {population.sessions} sessions in {population.seconds:.1f} s")
    server = fleet.server(start_gunicorn(f"codexweb-{scale}", "wsgi:app", env, workdir, "/healthz"))
    return Target(scale, server, population, app)


def targets_of(scenario: Scenario, targets: list[Target]) -> list[Target]:
    return targets if scenario.scaled else targets[:1]


def prepare(chosen: list[Scenario], targets: list[Target], workdir: Path) -> dict[str, str]:
    """Write every scenario's data file and probe it once; returns {skipped key: why}."""
    skipped: dict[str, str] = {}
    for scenario in chosen:
        for target in targets_of(scenario, targets):
            try:
                prepare_one(scenario, target, workdir)
            except Unavailable as why:
                skipped[scenario.key] = str(why)
                log(f"  {scenario.key}: skipped ({why})")
                break
    return skipped


def prepare_one(scenario: Scenario, target: Target, workdir: Path) -> None:
    folder = workdir / target.name
    folder.mkdir(exist_ok=True)
    population = target.population
    url = target.server.url
    if scenario.key == "cycle":
        probe_users, *sets = population.cycle_users
        scenarios.probe_cycle(url, probe_users[0])
        # Fresh users for every run: a run cut off mid-cycle leaves sessions active.
        names = ["warmup", *(str(n) for n in range(1, len(sets) - 1)), "profile"]
        for name, users in zip(names, sets, strict=True):
            target.data[f"cycle/{name}"] = scenarios.write_lines(
                folder / f"cycle-{name}.tsv", scenarios.cycle_lines(users)
            )
        return
    if scenario.key == "page":
        users = population.api_users[: scenarios.PAGE_USERS]
        cookies, how = scenarios.page_cookies(url, target.app, users)
        lines = scenarios.page_lines(cookies)
        log(f"  page: {how}")
    else:
        lines = scenarios.LINE_BUILDERS[scenario.key](population)
    scenarios.probe(url, lines[0])
    target.data[scenario.key] = scenarios.write_lines(folder / f"{scenario.key}.tsv", lines)


# Measuring -------------------------------------------------------------------------------


def measure(scenario: Scenario, target: Target, load: wrk.Load, round_: str) -> wrk.Result:
    """One wrk run; `round_` ("warmup", "1"…, "profile") picks the cycle's fresh users."""
    if scenario.key == "cycle":
        data = target.data[f"cycle/{round_}"]
        args = [str(load.threads), wrk.USER_AGENT]
        return metered(target.server, "cycle.lua", data, load, args, target.health_url)
    data = target.data[scenario.key]
    return metered(target.server, scenario.script, data, load, [], target.health_url)


def metered(
    server: Server, script: str, data: Path, load: wrk.Load, args: list[str], drain_url: str
) -> wrk.Result:
    """A wrk run, plus the server's CPU time per request it served (noise-robust: what other
    processes on a shared machine do changes req/s far more than CPU time per request)."""
    offset, cpu = server.log_size(), server.cpu_seconds()
    result = wrk.run(server.url, script, data, load, args, drain_url)
    served = server.bench_requests_since(offset) or result.requests
    if served:
        result.server_cpu_ms = round((server.cpu_seconds() - cpu) * 1000 / served, 3)
    return result


def run_rounds(
    plan: Plan,
    runnable: list[Scenario],
    targets: list[Target],
    baseline: Server,
    baseline_data: Path,
    load: wrk.Load,
) -> list[dict]:
    measurements = []
    for round_ in range(1, plan.rounds + 1):
        log(f"round {round_}/{plan.rounds}")
        for scenario in runnable:
            base = metered(baseline, "requests.lua", baseline_data, load, [], baseline.url)
            measurements.append(record(round_, scenario, "baseline", base))
            chosen = targets_of(scenario, targets)
            shift = (round_ - 1) % len(chosen)
            for target in chosen[shift:] + chosen[:shift]:
                result = measure(scenario, target, load, str(round_))
                measurements.append(record(round_, scenario, target.name, result))
                log(
                    f"  {scenario.key:8} {target.name:>5}: {result.rps:7.0f} req/s "
                    f"(baseline {base.rps:.0f}), p99 {result.p99_ms:.1f} ms"
                    + (f", {result.errors} errors" if result.errors else "")
                )
    return measurements


def profile(scenario: Scenario, target: Target, load: wrk.Load) -> dict:
    """One more measurement with py-spy sampling both workers; the hottest frames, inclusive."""
    from . import profiling

    log(f"profiling {scenario.key} on {target.name}")
    with profiling.sampling(target.server.process.pid) as samples:
        result = measure(scenario, target, load, round_="profile")
    summary = profiling.summarise(samples.path)
    summary["rps_under_profiler"] = round(result.rps, 1)
    print(profiling.markdown(scenario.label, summary), file=sys.stderr)
    return summary


def record(round_: int, scenario: Scenario, target: str, result: wrk.Result) -> dict:
    return {"round": round_, "scenario": scenario.key, "target": target, **result.as_dict()}


def password_hash_cost(app: Flask, samples: int) -> dict[str, Any]:
    """In-process cost of hashing and checking a password (the login's cost by design)."""
    from codexweb.auth.accounts import hash_matches

    with app.app_context():
        hashes, checks = [], []
        stored = hash_password(PASSWORD)
        for _ in range(samples):
            start = time.perf_counter()
            hash_password(PASSWORD)
            hashes.append(time.perf_counter() - start)
            start = time.perf_counter()
            hash_matches(stored, PASSWORD)
            checks.append(time.perf_counter() - start)
    return {
        "method": stored.rsplit("$", 2)[0],
        "hash_ms": round(statistics.median(hashes) * 1000, 1),
        "check_ms": round(statistics.median(checks) * 1000, 1),
        "samples": samples,
    }


# Results ---------------------------------------------------------------------------------


def meta(plan: Plan, args: argparse.Namespace, started: datetime, load_before) -> dict:
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan.name,
        "argv": sys.argv[1:],
        "commit": git_describe(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(value, 2) for value in load_before],
            "loadavg_after": [round(value, 2) for value in os.getloadavg()],
        },
    }


def git_describe() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(results: dict, started: datetime) -> Path:
    import json

    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
