"""Run selected tests many times under artificial CPU load and other thread counts; print each test's pass rate.

A maintainer's tool for tests whose outcome could depend on timing, machine load or the number of threads (kill and
resume, concurrency, features compared across batches), to run before such a test reaches CI.  Not part of the suite
(pytest does not collect this file; ``test_stress.py`` checks that it works)::

    PYTHONPATH=$PWD python tests/reliability/stress.py --repeat 20 --load 2 --threads 1,2 \\
        tests/test_shards.py tests/test_cache.py -k "torchrun or resume"

Each repetition is one fresh ``python -m pytest`` run of the selected tests with ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` set to the thread count; repetitions alternate between the thread counts.  ``--load`` busy-loop
processes keep CPUs busy meanwhile.  When the runner ends, however it ends, its busy loops stop, and so does the run
in progress (Ctrl-C, SIGTERM; a SIGKILLed runner's loops stop by themselves, its pytest run finishes on its own).  The
exit status is 0 when every test passed (or was skipped) in every run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BUSY_LOOP = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n    sum(range(100_000))\n"
"""One busy-loop process: spins until its parent (the runner) is gone."""

_STOP_TIMEOUT = 5.0


@contextmanager
def busy_loops(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy-loop processes for the duration of the block; terminated (then killed) when it ends."""
    loops: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            loops.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())]))
        yield loops
    finally:
        for loop in loops:
            loop.terminate()
        for loop in loops:
            try:
                loop.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                loop.kill()
                loop.wait(timeout=_STOP_TIMEOUT)


def _label(case: ET.Element) -> str:
    """``path::name`` of a JUnit test case (``classname::name`` when the class name is not a module path)."""
    classname, name = case.get("classname", ""), case.get("name", "")
    path = Path(*classname.split(".")).with_suffix(".py")
    return f"{path.as_posix() if path.exists() else classname}::{name}"


def _outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """{test: (passed | failed | skipped, first line of the failure)} from a JUnit XML report."""
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error")]
        skipped = any(c.tag == "skipped" for c in case)
        message = (bad[0].get("message") or bad[0].text or "").strip().split("\n")[0][:160] if bad else ""
        out[_label(case)] = ("failed" if bad else "skipped" if skipped else "passed", message)
    return out


def run_once(pytest_args: Sequence[str], threads: int | None, timeout: float) -> tuple[dict, str]:
    """One ``python -m pytest`` run; returns ({test: (outcome, message)}, problem of the run or "")."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="stress-") as tmp:
        report = Path(tmp) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                   *pytest_args]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            output = None
        finally:  # on a timeout, and when the runner itself is stopped (Ctrl-C, SIGTERM)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        if output is None:
            return {}, f"timed out after {timeout:g} s"
        if not report.exists():
            return {}, f"pytest exited with {proc.returncode} without a report: {output.strip()[-300:]}"
        return _outcomes(report), ""


def _counts(text: str) -> list[int]:
    """argparse type of ``--threads``: positive integers, comma-separated."""
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes positive integers, comma-separated (e.g. 1,2); got {text!r}")
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tests/reliability/stress.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("tests", nargs="+", help="pytest node ids, files or folders")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--repeat", type=int, default=20, help="runs per thread count")
    p.add_argument("--load", type=int, default=2, help="busy-loop processes running meanwhile")
    p.add_argument("--threads", type=_counts, help="OMP_NUM_THREADS of the runs, comma-separated (default: as "
                   "inherited)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one pytest run may take")
    return p


def _table(counts: dict[tuple[str, str], Counter], repeat: int) -> list[str]:
    """One line per (thread count, test): passed / runs, failed (or not reported), skipped."""
    lines = [f"{'threads':8} {'passed':>8} {'failed':>7} {'skipped':>8}  test"]
    for (threads, test), c in sorted(counts.items()):
        failed = repeat - c["passed"] - c["skipped"]
        lines.append(f"{threads:8} {c['passed']:>5}/{repeat:<2} {failed:>7} {c['skipped']:>8}  {test}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected tests; print progress, failures and the pass-rate table; return the exit status."""
    args = _parser().parse_args(argv)
    if args.repeat < 1 or args.load < 0:
        raise SystemExit("--repeat must be >= 1 and --load >= 0")
    pytest_args = [*args.tests, *(["-k", args.keyword] if args.keyword else [])]
    settings = args.threads or [None]
    names = {t: str(t) if t is not None else os.environ.get("OMP_NUM_THREADS", "default") for t in settings}
    print(f"stress: {args.repeat} run(s) x threads {', '.join(names.values())}, {args.load} busy loop(s), "
          f"{os.cpu_count()} CPU(s): pytest {' '.join(pytest_args)}", flush=True)
    counts: dict[tuple[str, str], Counter] = {}
    failures: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with busy_loops(args.load):
            for rep in range(1, args.repeat + 1):
                for threads in settings:
                    start = time.monotonic()
                    outcomes, problem = run_once(pytest_args, threads, args.timeout)
                    where = f"run {rep}, threads {names[threads]}"
                    failures += [f"{where}: {problem}"] if problem else []
                    for test, (outcome, message) in outcomes.items():
                        counts.setdefault((names[threads], test), Counter())[outcome] += 1
                        failures += [f"{where}: {test}: {message}"] if outcome == "failed" else []
                    tally = Counter(o for o, _ in outcomes.values())
                    print(f"{where}: {tally['passed']} passed, {tally['failed']} failed, {tally['skipped']} skipped"
                          f"{'; ' + problem if problem else ''} ({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(["", *failures, *([""] if failures else []),
                     *(_table(counts, args.repeat) if counts else ["no test was reported"])]))
    return 0 if counts and not failures and all(c["passed"] + c["skipped"] == args.repeat
                                                for c in counts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
