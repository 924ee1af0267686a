# shellcheck shell=bash
# Helpers shared by the test scripts. Sourced, never executed.

[[ -n "${_POSTHORN_COMMON_SH:-}" ]] && return 0
_POSTHORN_COMMON_SH=1

# shellcheck disable=SC2034 # used by the libs that source this one
POSTHORN_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Bash has a single EXIT trap, and several helpers need cleanup (stop a
# server, drop a database), so they register commands here. They run last
# registered first, and the script keeps its own exit status.
_POSTHORN_CLEANUPS=()
on_exit() { _POSTHORN_CLEANUPS+=("$(printf '%q ' "$@")"); }
_posthorn_run_cleanups() {
  local rc=$? i
  set +e
  for ((i = ${#_POSTHORN_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${_POSTHORN_CLEANUPS[i]}"
  done
  _POSTHORN_CLEANUPS=()
  exit "$rc"
}
trap _posthorn_run_cleanups EXIT
# Turn signals into a normal exit so the EXIT trap still cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# True if something accepts TCP connections on host:port.
# shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
tcp_open() { timeout 2 bash -c ': <"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# apt-get install without prompts; the index is refreshed once per run.
# Output goes to a log that is shown only when the install fails.
apt_install() {
  is_root || die "installing $* needs root (sudo apt-get install --no-install-recommends $*)"
  command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
  local log="${TMPDIR:-/tmp}/posthorn-apt.log"
  if [[ -z "${_POSTHORN_APT_UPDATED:-}" ]]; then
    step "apt-get update"
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1; then
      cat "$log" >&2
      die "apt-get update failed"
    fi
    _POSTHORN_APT_UPDATED=1
  fi
  step "apt-get install $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Use-Pty=0 "$@" >"$log" 2>&1; then
    tail -n 50 "$log" >&2
    die "apt-get install $* failed (full log: $log)"
  fi
}
