#!/usr/bin/env bash
# The test command: sets up what the tests need (PostgreSQL, Python tools,
# smtp-sink, cargo-nextest), runs the Rust tests, then the OpenAPI contract
# test. Arguments go to `cargo nextest run`.
#
#   POSTHORN_SKIP_CONTRACT=1        skip scripts/contract-test.sh
#   POSTHORN_TEST_DATABASE_URL      use this PostgreSQL server (see scripts/lib/postgres.sh)
#   POSTHORN_TEST_FORCE_PRIVATE_PG=1  always use a throwaway PostgreSQL server
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/python.sh
source scripts/lib/python.sh
# shellcheck source=scripts/lib/postfix.sh
source scripts/lib/postfix.sh
# shellcheck source=scripts/lib/clients.sh
source scripts/lib/clients.sh

ensure_postgres

# Tests name their databases posthorn_test_*; a killed run leaves some
# behind, and the template is rebuilt if migrations changed.
pg_drop_test_databases "$POSTHORN_TEST_DATABASE_URL" || die "could not drop leftover test databases"
drop_test_databases_at_exit() {
  pg_drop_test_databases "$POSTHORN_TEST_DATABASE_URL" || warn "could not drop the test databases"
}
on_exit drop_test_databases_at_exit

ensure_python_tools
ensure_smtp_sink
ensure_smtp_clients
ensure_browser
ensure_example_toolchains

# The TLS tests generate a private CA and server certificate with openssl.
if ! command -v openssl >/dev/null; then
  apt_install openssl
fi

step "cargo-nextest"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
if ! cargo nextest --version >/dev/null 2>&1; then
  step "cargo install cargo-nextest --locked"
  cargo install cargo-nextest --locked
fi

step "Helm chart and Dockerfile checks (offline)"
scripts/check-chart.sh
scripts/check-dockerfile.sh

step "cargo nextest run --workspace --all-targets --profile ci${*:+ $*}"
cargo nextest run --workspace --all-targets --profile ci "$@"

# The black-box tests again on the embedded store. The store conformance suite already ran against
# both stores above; tests of PostgreSQL itself end early on this pass.
step "POSTHORN_TEST_BACKEND=sqlite cargo nextest run --test api --profile ci (the embedded store)"
POSTHORN_TEST_BACKEND=sqlite cargo nextest run --test api --profile ci -E 'not test(/^store::/)' "$@"

if [[ "${POSTHORN_SKIP_CONTRACT:-0}" == 1 ]]; then
  step "contract test skipped (POSTHORN_SKIP_CONTRACT=1)"
else
  step "contract test: scripts/contract-test.sh"
  scripts/contract-test.sh
fi
