"""A/B of server settings for single-event ingest, alternated in one run.

    .venv/bin/python bench/ingest_ab.py [--rounds N] [--duration S] CONFIG [CONFIG ...]

Each CONFIG is a comma-separated list of ``TIDINGS_*=value`` settings for one server (an
empty string: the defaults), e.g.::

    .venv/bin/python bench/ingest_ab.py "TIDINGS_LOG_WRITER=thread" ""

One `tidings serve` per config (fresh SQLite database each) and the bare echo run side by
side. Every round drives the echo, then each server (in turn reversed every other round),
with the same wrk script as ``bench/ingest.py``, and divides each server's req/s by the
echo's of that round: on a shared machine whose speed drifts, ratios taken minutes apart
compare badly, and pairs taken seconds apart compare well. Prints each round and, per
config, the median and mean ratio, and how many rounds it beat the first config in.

``--pause-others``: while one target is driven, the other servers (every process of
theirs) are stopped with SIGSTOP, so that what an idle server costs (its worker polling,
say) does not slow down the one measured: needed when the configs differ in exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ingest
from _load import LoadSpec
from idle import _tree


@contextlib.contextmanager
def _paused(targets: list[ingest.Target]) -> Iterator[None]:
    """SIGSTOP every process of these targets for the block, then SIGCONT them."""
    pids = [pid for target in targets for pid in _tree(target.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", metavar="CONFIG")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pause-others", action="store_true", help="SIGSTOP the idle servers")
    args = parser.parse_args()

    runs: list[ingest.Processes] = []
    try:
        servers = []
        for config in args.configs:
            env = [item for item in config.split(",") if item]
            workdir = Path(tempfile.mkdtemp(prefix="tidings-ab-"))
            opts = ingest.parse_args(["--quick", *(a for e in env for a in ("--env", e))])
            bench, procs = ingest.Bench(opts, workdir), ingest.Processes(workdir, opts)
            runs.append(procs)
            procs.prepare_server()
            server = procs.server()
            spec = LoadSpec(auth=server.auth, prefix="s", batch=1, pool=20_000)
            servers.append((config or "(defaults)", bench, server, spec))
        bench0 = servers[0][1]
        echo = runs[0].echo()
        echo_spec = LoadSpec(auth=echo.auth, prefix="e", batch=1, pool=20_000)
        for _, bench, server, spec in servers:  # warm-up
            bench.wrk(server, spec, args.connections, 2)
            bench.drain(server, "the warm-up")
        bench0.wrk(echo, echo_spec, args.connections, 2)

        def others(target: ingest.Target | None) -> contextlib.AbstractContextManager[None]:
            if not args.pause_others:
                return contextlib.nullcontext()
            return _paused([s for _, _, s, _ in servers if s is not target])

        ratios: dict[str, list[float]] = {name: [] for name, *_ in servers}
        for round_ in range(args.rounds):
            with others(None):
                base = bench0.wrk(echo, echo_spec, args.connections, args.duration)
            line = f"round {round_ + 1}: echo {base.rps:,.0f} req/s"
            order = servers if round_ % 2 == 0 else servers[::-1]
            for name, bench, server, spec in order:
                with others(server):
                    r = bench.wrk(server, spec, args.connections, args.duration)
                ratios[name].append(r.rps / base.rps)
                line += f" | {name} {r.rps:,.0f} ({r.rps / base.rps:.1%})"
                bench.drain(server, "the run")
            print(line, flush=True)

        first = ratios[servers[0][0]]
        print("\nratio to the echo of the same round:")
        for name, values in ratios.items():
            wins = sum(v > f for v, f in zip(values, first, strict=True))
            versus = "" if values is first else f", beat the first config in {wins}/{len(values)}"
            print(
                f"  {name}: median {statistics.median(values):.1%}, "
                f"mean {statistics.mean(values):.1%}{versus}"
            )
    finally:
        for procs in runs:
            procs.stop_all()


if __name__ == "__main__":
    main()
