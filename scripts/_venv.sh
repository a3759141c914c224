# Sourced by the other scripts: make .venv and install the project with pinned versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.tidings-installed
MODE="${1:-run}"
HASH="$(cat pyproject.toml constraints.txt clients/python/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)"
WANT="$HASH-$MODE"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# A dev install (the project, its dev tools and the SDK) has all a run install has: after
# scripts/test, scripts/serve needs no install, and the two can alternate freely.
if [ "$HAVE" != "$WANT" ] && [ "$HAVE" != "$HASH-dev" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "$MODE" = "dev" ]; then
        .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
        if [ -f clients/python/pyproject.toml ]; then
            .venv/bin/python -m pip install --quiet -c constraints.txt -e 'clients/python'
        fi
    else
        .venv/bin/python -m pip install --quiet -c constraints.txt -e .
    fi
    echo "$WANT" > "$STAMP"
fi
