# shellcheck shell=bash
# ensure_smtp_clients: the real SMTP clients the submission tests drive besides Python's smtplib:
# swaks and curl (Debian), Nodemailer (npm, into target/tools/npm), and the SASL modules Postfix's
# SMTP client needs to log in. Exports POSTHORN_TEST_NODE_PATH.

[[ -n "${_POSTHORN_CLIENTS_SH:-}" ]] && return 0
_POSTHORN_CLIENTS_SH=1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Pinned: the tests read its replies.
NODEMAILER_VERSION=7.0.9

ensure_smtp_clients() {
  step "SMTP clients: swaks, curl, Nodemailer, Postfix's SASL client"
  local missing=()
  command -v swaks >/dev/null || missing+=(swaks)
  command -v curl >/dev/null || missing+=(curl)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || missing+=(libsasl2-modules)
  if ((${#missing[@]})); then
    if is_root && command -v apt-get >/dev/null; then
      apt_install "${missing[@]}"
    else
      die "missing: ${missing[*]} (sudo apt-get install --no-install-recommends ${missing[*]})"
    fi
  fi
  local tools_dir="${POSTHORN_TOOLS_DIR:-$PWD/target/tools}"
  local prefix="$tools_dir/npm"
  if [[ ! -f "$prefix/node_modules/nodemailer/package.json" ]] ||
    ! grep -q "\"version\": \"$NODEMAILER_VERSION\"" "$prefix/node_modules/nodemailer/package.json"; then
    step "npm install nodemailer@$NODEMAILER_VERSION"
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --prefix "$prefix" "nodemailer@$NODEMAILER_VERSION" >/dev/null ||
      die "npm install nodemailer failed"
  else
    note "nodemailer $NODEMAILER_VERSION already installed"
  fi
  export POSTHORN_TEST_NODE_PATH="$prefix/node_modules"
}
