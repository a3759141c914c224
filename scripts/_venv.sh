# Sourced by the other scripts: make .venv and install the project with pinned versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.tidings-installed
WANT="$(cat pyproject.toml constraints.txt clients/python/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)-${1:-run}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "${1:-run}" = "dev" ]; then
        .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
        if [ -f clients/python/pyproject.toml ]; then
            .venv/bin/python -m pip install --quiet -c constraints.txt -e 'clients/python'
        fi
    else
        .venv/bin/python -m pip install --quiet -c constraints.txt -e .
    fi
    echo "$WANT" > "$STAMP"
fi
