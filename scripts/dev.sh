#!/usr/bin/env bash
# One entry point for a newcomer and for CI.
#   scripts/dev.sh setup   install everything this project needs (idempotent)
#   scripts/dev.sh demo    setup, then fix the bundled demo server live
#   scripts/dev.sh test    setup, then run the default test suite (extra args go to pytest)
# Needs root on Debian 12: it installs Debian packages, kernel headers links and mounts.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OPUS_BPF_VENV:-$ROOT/.venv}
cmd=${1:-setup}; shift || true

log() { printf '[opus-bpf setup] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "opus-bpf: scripts/dev.sh must run as root (it installs packages and loads BPF); try: sudo $0 $cmd" >&2
    exit 2
  fi
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

kernel_headers() {
  # BCC compiles BPF C against /lib/modules/$(uname -r)/build. When the running kernel has no
  # headers package (custom or VM kernels), point it at Debian's generic headers.
  local rel; rel=$(uname -r)
  local dir=/lib/modules/$rel
  if [ -e "$dir/build/include/linux/kconfig.h" ] || [ -e "$dir/build/include/generated/autoconf.h" ]; then
    return 0
  fi
  apt_install linux-headers-amd64
  local arch common
  arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$arch" ] && [ -n "$common" ] || { echo "opus-bpf: no Debian kernel headers found under /usr/src" >&2; exit 1; }
  mkdir -p "$dir"
  ln -sfn "$arch" "$dir/build"
  ln -sfn "$common" "$dir/source"
  log "linked $dir/build -> $arch, source -> $common"
}

mounts() {
  mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
  if [ ! -d /sys/kernel/debug/tracing ] && [ ! -d /sys/kernel/tracing/events ]; then
    echo "opus-bpf: neither tracefs nor debugfs could be mounted; uprobes need one" >&2; exit 1
  fi
}

venv() {
  local py=/usr/bin/python3
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$py" -m venv "$VENV"
  fi
  # Debian's bcc module lives in dist-packages of the system python: let the venv see it.
  local site; site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # Only bcc is wanted, not all of dist-packages: a directory holding a link to it goes on the path.
  mkdir -p "$VENV/debian-bcc"
  ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc"
  echo "$VENV/debian-bcc" > "$site/debian-bcc.pth"
  local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    log "pip install -e .[dev]"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e "$ROOT[dev]"
    rm -f "$VENV"/.installed-*; touch "$stamp"
  fi
  "$VENV/bin/python" -c 'import bcc, elftools, pycparser, ptrace, prometheus_client' \
    || { echo "opus-bpf: the virtual environment cannot import its dependencies" >&2; exit 1; }
}

setup() {
  need_root
  apt_install python3-bpfcc python3-venv gcc make libc6-dev patch binutils prometheus prometheus-pushgateway
  kernel_headers
  mounts
  venv
}

case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/python" "$ROOT/examples/demo/run_demo.py" "$@" ;;
  test)
    setup
    cd "$ROOT"
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then
      echo "opus-bpf: pytest collected no tests (exit 5): the test files are missing or every test was deselected; that is a failure" >&2
      exit 1
    fi
    exit $rc ;;
  *) echo "usage: $0 setup|demo|test [args]" >&2; exit 2 ;;
esac
