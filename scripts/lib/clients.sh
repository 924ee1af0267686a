# shellcheck shell=bash
# ensure_smtp_clients: the real clients the tests drive besides Python's: swaks and curl (Debian),
# Nodemailer and Resend's Node SDK (npm, into target/tools/npm), and the SASL modules Postfix's SMTP
# client needs to log in. Exports POSTHORN_TEST_NODE_PATH.

[[ -n "${_POSTHORN_CLIENTS_SH:-}" ]] && return 0
_POSTHORN_CLIENTS_SH=1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Pinned: the tests read their replies.
NODEMAILER_VERSION=7.0.9
RESEND_NODE_VERSION=6.38.0

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
  local package version
  for package in "nodemailer@$NODEMAILER_VERSION" "resend@$RESEND_NODE_VERSION"; do
    version="${package##*@}"
    if [[ ! -f "$prefix/node_modules/${package%@*}/package.json" ]] ||
      ! grep -q "\"version\": \"$version\"" "$prefix/node_modules/${package%@*}/package.json"; then
      step "npm install $package"
      mkdir -p "$prefix"
      npm install --silent --no-audit --no-fund --prefix "$prefix" "$package" >/dev/null ||
        die "npm install $package failed"
    else
      note "$package already installed"
    fi
  done
  export POSTHORN_TEST_NODE_PATH="$prefix/node_modules"
}

# ensure_browser: headless Chromium and its WebDriver (Debian's chromium and chromium-driver), which
# the console's browser test drives through Selenium (pinned in scripts/requirements-test.txt).
ensure_browser() {
  step "browser: chromium, chromium-driver"
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  if ((${#missing[@]})); then
    if is_root && command -v apt-get >/dev/null; then
      apt_install "${missing[@]}"
    else
      die "missing: ${missing[*]} (sudo apt-get install --no-install-recommends ${missing[*]})"
    fi
  fi
  export POSTHORN_TEST_CHROMIUM="${POSTHORN_TEST_CHROMIUM:-$(command -v chromium)}"
  export POSTHORN_TEST_CHROMEDRIVER="${POSTHORN_TEST_CHROMEDRIVER:-$(command -v chromedriver)}"
}

# ensure_example_toolchains: what the client examples in examples/clients/ are run with besides curl,
# Python and Node: Go (golang-go) and Java (default-jdk-headless), from Debian.
ensure_example_toolchains() {
  step "example toolchains: go, javac"
  local missing=()
  command -v go >/dev/null || missing+=(golang-go)
  command -v javac >/dev/null || missing+=(default-jdk-headless)
  if ((${#missing[@]})); then
    if is_root && command -v apt-get >/dev/null; then
      apt_install "${missing[@]}"
    else
      die "missing: ${missing[*]} (sudo apt-get install --no-install-recommends ${missing[*]})"
    fi
  fi
}
