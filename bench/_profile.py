"""Optional py-spy sampling of the server while a load run is going (``ingest.py --profile``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy_binary() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from ``py-spy dump`` ({} without py-spy)."""
    binary = py_spy_binary()
    if binary is None:
        return {}
    try:
        r = subprocess.run(
            [binary, "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    names: dict[int, str] = {}
    for line in r.stdout.splitlines():
        m = re.match(r'^Thread (0x[0-9a-fA-F]+|\d+) \([^)]*\): "(.*)"', line)
        if m:
            tid = int(m.group(1), 0)
            names[tid] = m.group(2)
    return names


def start(
    pid: int, seconds: float, out: Path, *, gil: bool = False
) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; None if py-spy is not installed.

    ``gil=True`` samples only the thread holding the GIL: where the interpreter's one
    core goes. Otherwise every thread that is not idle (including waits in C, e.g. fsync).
    """
    binary = py_spy_binary()
    if binary is None:
        return None
    cmd = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "200",
        "--nonblocking",
        "--threads",
        *(["--gil"] if gil else []),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    log = out.with_suffix(out.suffix + ".log").open("wb")
    with log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _frame_key(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    if " (" in frame and frame.endswith(")"):
        func, loc = frame[:-1].split(" (", 1)
        path = loc.rsplit(":", 1)[0]
        return f"{func} ({Path(path).name})"
    return frame


def summarize(raw: Path, top: int = 12) -> str:
    """Per thread: its share of samples, then its top functions by self and by inclusive
    samples (frames in >= 85% of the thread's samples, its root chain, are left out)."""
    try:
        lines = raw.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no profile at {raw})"
    stacks: dict[str, list[tuple[list[str], int]]] = {}
    total = 0
    for line in lines:
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith(("thread ", "process ")):
            thread = frames[0].split(": ", 1)[-1].strip('"')
            frames = frames[1:]
        if frames:
            stacks.setdefault(thread, []).append(([_frame_key(f) for f in frames], int(count_s)))
            total += int(count_s)
    if total == 0:
        return "(profile is empty)"
    out = [f"{total} samples ({raw.name})"]
    by_size = sorted(stacks.items(), key=lambda kv: -sum(c for _, c in kv[1]))
    for thread, entries in by_size:
        n = sum(c for _, c in entries)
        if n < 0.03 * total:
            continue
        # The thread's root chain (bootstrap, run loop...) is in (nearly) every sample.
        presence: Counter[str] = Counter()
        for keys, count in entries:
            for k in set(keys):
                presence[k] += count
        roots = {k for k, c in presence.items() if c >= 0.85 * n}
        selfc: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        for keys, count in entries:
            selfc[keys[-1]] += count
            for k in set(keys) - roots:
                incl[k] += count
        out.append(f"  thread {thread}: {n / total:.0%} of samples")
        out.append("    self:      " + _fmt(selfc, total, top // 2))
        out.append("    inclusive: " + _fmt(incl, total, top))
    return "\n".join(out)


def _fmt(counts: Counter[str], total: int, top: int) -> str:
    return "\n               ".join(f"{c / total:5.1%}  {k}" for k, c in counts.most_common(top))
