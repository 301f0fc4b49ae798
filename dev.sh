#!/usr/bin/env bash
# crashcart developer entry point: installs what is missing, then runs a job.
#
#   ./dev.sh demo    set up, then run the main job on the simulated board
#   ./dev.sh test    set up, then run the test suite (what CI runs)
#   ./dev.sh setup   only install: apt packages, the venv, the package
#
# Idempotent: a second run checks in about a second and installs nothing.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi gdb-multiarch
              gcc libc6-dev make python3 python3-venv)
VENV=.venv
STAMP=$VENV/.crashcart-installed

say() { printf 'dev.sh: %s\n' "$*" >&2; }

missing_packages() {
    local missing=()
    command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
    command -v arm-none-eabi-gcc >/dev/null || missing+=(gcc-arm-none-eabi)
    [ -e /usr/lib/arm-none-eabi/newlib/libc.a ] || [ -e /usr/lib/arm-none-eabi/lib/libc.a ] \
        || missing+=(libnewlib-arm-none-eabi)
    command -v gdb-multiarch >/dev/null || missing+=(gdb-multiarch)
    command -v gcc >/dev/null || missing+=(gcc)
    [ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
    command -v make >/dev/null || missing+=(make)
    command -v python3 >/dev/null || missing+=(python3)
    if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    echo "${missing[@]:-}"
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        say "installing system packages (missing: $missing)"
        bash -c "$cmd"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        say "installing system packages with sudo (missing: $missing)"
        sudo bash -c "$cmd"
    else
        say "missing system packages: $missing"
        say "run this as root, then run ./dev.sh again:"
        printf '  %s\n' "$cmd" >&2
        exit 3
    fi
}

check_python() {
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        say "crashcart needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)"
        exit 3
    fi
}

install_venv() {
    if [ ! -x $VENV/bin/python ]; then
        say "creating the virtual environment in $VENV"
        python3 -m venv $VENV
    fi
    local want
    want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -f $STAMP ] || [ "$(cat $STAMP)" != "$want" ]; then
        say "installing crashcart and its test dependencies into $VENV"
        if ! { $VENV/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
               $VENV/bin/python -m pip install --disable-pip-version-check -e '.[test]'; } \
               > $VENV/pip.log 2>&1; then
            tail -n 40 $VENV/pip.log >&2
            say "pip install failed (full log: $VENV/pip.log)"
            exit 3
        fi
        echo "$want" > $STAMP
    fi
}

setup() {
    install_packages
    check_python
    install_venv
}

job=${1:-}
[ $# -gt 0 ] && shift
case "$job" in
    setup)
        setup
        say "ready: $VENV/bin/crashcart --help"
        ;;
    test)
        setup
        exec $VENV/bin/python -m pytest "$@"
        ;;
    demo)
        setup
        exec $VENV/bin/crashcart demo "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test|setup [args]" >&2
        exit 2
        ;;
esac
