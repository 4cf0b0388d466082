#!/bin/bash
# Install Autobahn|Testsuite (wstest) into its own Python 2.7 virtualenv:
#   tests/autobahn/install_autobahn.sh [DEST]     (default: .peers/autobahn/venv-py2 in the repo)
# Idempotent: when DEST already runs `wstest --autobahnversion`, it does nothing (~0.5 s).
#
# autobahntestsuite 25.10.1 is Python-2-only code (print statements, pinned Twisted 19.10 /
# autobahn 0.10.9); on Python 3 it installs but `wstest` dies with "No module named
# '_version'".  It needs a CPython 2.7: pyenv's 2.7.x (Debian 12 has no python2 package), or
# PY2=/path/to/python2.7.  The first install takes 30-80 s (PyPI only).
# Exit status: 0 installed, 3 no Python 2.7 here (the caller decides: skip, or fail under CI),
# anything else: the install itself failed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/.peers/autobahn/venv-py2}
VERSION=25.10.1

if [ -x "$DEST/bin/wstest" ] && "$DEST/bin/wstest" --autobahnversion >/dev/null 2>&1 \
   && "$DEST/bin/python" -c 'import autobahntestsuite' 2>/dev/null; then
    exit 0
fi

is_py27() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; }
find_py2() {
    local cand root
    if [ -n "${PY2:-}" ]; then echo "$PY2"; return; fi
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    # (not pyenv's python2.7 shim on PATH: it fails unless 2.7 is a selected version)
    for cand in $(ls -d "$root"/versions/2.7*/bin/python2.7 2>/dev/null | sort -rV) \
                $(command -v python2.7 2>/dev/null) /usr/bin/python2.7 /usr/local/bin/python2.7; do
        if is_py27 "$cand"; then echo "$cand"; return; fi
    done
}
PY2=$(find_py2)
if ! is_py27 "$PY2"; then
    echo "install_autobahn: no Python 2.7 found (pyenv install 2.7.18, or set PY2=...)" >&2
    exit 3
fi

PY3=${PY3:-$(command -v python3.11 || command -v python3)}
TOOLS=$(dirname "$DEST")/venv-virtualenv
echo "install_autobahn: autobahntestsuite $VERSION into $DEST (with $PY2)"
rm -rf "$DEST"
if ! [ -x "$TOOLS/bin/virtualenv" ]; then
    rm -rf "$TOOLS"
    "$PY3" -m venv "$TOOLS"
    # virtualenv < 20.22 is the last line that can still create Python 2.7 envs
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "virtualenv<20.22"
fi
"$TOOLS/bin/virtualenv" -q -p "$PY2" "$DEST"
# (grep: this machine's pip.conf names local indexes that py2's pip warns about, one line each)
"$DEST/bin/pip" install -q --disable-pip-version-check --no-python-version-warning \
    "autobahntestsuite==$VERSION" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$DEST/bin/wstest" --autobahnversion
