#!/usr/bin/env bash
# Builds posthorn and runs it from the repository root.
#
#   ./scripts/run.sh                                   posthorn serve
#   ./scripts/run.sh token --sub me --scope send,read  any other subcommand
#
# With no configuration posthorn uses its embedded default: the queue in ./posthorn-data/posthorn.db,
# a token secret generated into ./posthorn-data/jwt-secret, and, with no SMTP upstream, every message
# written to ./posthorn-data/outbox/ as an .eml file. POSTHORN_* variables configure the rest
# (POSTHORN_DATABASE_URL=postgres://..., POSTHORN_SMTP_URL=smtp://...; see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if [[ "${1:-serve}" == serve ]]; then
  echo "==> building posthorn (cargo build --release --locked --bin posthorn)" >&2
fi
cargo build --release --locked --quiet --bin posthorn
exec target/release/posthorn "${@:-serve}"
