# shellcheck shell=bash
# ensure_smtp_sink: Postfix's smtp-sink, a fast SMTP server that accepts and
# discards mail (or answers with chosen errors), for the delivery tests.
# Exports POSTHORN_TEST_SMTP_SINK.

[[ -n "${_POSTHORN_POSTFIX_SH:-}" ]] && return 0
_POSTHORN_POSTFIX_SH=1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

_postfix_install() {
  # "No configuration" installs the binaries without a main.cf, so apt asks
  # nothing and no mail server is set up to take port 25.
  printf '%s\n' \
    'postfix postfix/main_mailer_type select No configuration' \
    'postfix postfix/mailname string localhost' | debconf-set-selections
  apt_install postfix
  # Where the package's init script did start a master anyway, stop it: only
  # smtp-sink is wanted, on test ports.
  if [[ -f /var/spool/postfix/pid/master.pid ]] && postfix status >/dev/null 2>&1; then
    note "stopping the postfix daemon that the package started"
    postfix stop >/dev/null 2>&1 || warn "could not stop the postfix daemon"
  fi
}

ensure_smtp_sink() {
  local sink=${POSTHORN_TEST_SMTP_SINK:-/usr/sbin/smtp-sink}
  step "smtp-sink: $sink"
  if [[ ! -x "$sink" ]]; then
    if is_root && command -v apt-get >/dev/null; then
      _postfix_install
    else
      die "smtp-sink not found at $sink. It comes with Debian's postfix package: sudo apt-get install --no-install-recommends postfix (answer 'No configuration'), or set POSTHORN_TEST_SMTP_SINK to an smtp-sink binary."
    fi
    [[ -x "$sink" ]] || die "postfix is installed but $sink is missing"
  fi
  export POSTHORN_TEST_SMTP_SINK="$sink"
}
