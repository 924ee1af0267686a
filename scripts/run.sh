#!/usr/bin/env bash
# Runs posthorn on this machine with everything it needs:
#   - builds the release binary;
#   - uses POSTHORN_DATABASE_URL, else the local PostgreSQL on 127.0.0.1:5432 (database "posthorn"),
#     else starts a private PostgreSQL whose data persists in the data directory;
#   - uses POSTHORN_JWT_SECRET, else a secret generated once into the data directory (mode 0600).
#
#   ./scripts/run.sh                                   posthorn serve
#   ./scripts/run.sh token --sub me --scope send,read  any other subcommand, same settings
#
#   POSTHORN_DATA_DIR     where the generated secret and private PostgreSQL live (default ./data)
#   POSTHORN_DEV_PG_PORT  port of the private PostgreSQL (default 54320)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh

data_dir=${POSTHORN_DATA_DIR:-$PWD/data}
mkdir -p "$data_dir"
quiet=0
[[ "${1:-serve}" != serve ]] && quiet=1
say() { ((quiet)) || step "$@"; }

# The private server keeps its data across runs and keeps running after this script ends, like a
# system service would; `pg_ctl -D DIR stop` stops it.
start_private_postgres() {
  local bindir port dir
  port=${POSTHORN_DEV_PG_PORT:-54320}
  if ! bindir=$(_pg_find_bindir); then
    is_root || die "no PostgreSQL found: set POSTHORN_DATABASE_URL, start one on 127.0.0.1:5432, or install it (sudo apt-get install --no-install-recommends postgresql)"
    apt_install postgresql
    bindir=$(_pg_find_bindir) || die "postgresql installed but initdb/pg_ctl not found"
  fi
  dir="$data_dir/postgres"
  if is_root; then
    # initdb refuses root; the postgres user must own a directory it can reach.
    _pg_ensure_os_user
    dir=/var/lib/posthorn-dev/postgres
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
  fi
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    say "initialising a private PostgreSQL in $dir"
    (cd "$dir" && _pg_as_owner "$bindir/initdb" -D "$dir" -U postgres -A trust -E UTF8 --no-locale) \
      >"$data_dir/initdb.log" 2>&1 || { cat "$data_dir/initdb.log" >&2; die "initdb failed"; }
  fi
  if ! tcp_open 127.0.0.1 "$port"; then
    say "starting the private PostgreSQL on 127.0.0.1:$port (stop it with: $bindir/pg_ctl -D $dir stop)"
    (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -s \
      -o "-p $port -k '$dir' -c listen_addresses=127.0.0.1" start) ||
      { cat "$dir/server.log" >&2 || true; die "PostgreSQL did not start"; }
  fi
  POSTHORN_DATABASE_URL="postgres://postgres@127.0.0.1:$port/posthorn"
}

if [[ -z "${POSTHORN_DATABASE_URL:-}" ]]; then
  _pg_ensure_client
  if _pg_local_answers && pg_url_usable "$POSTHORN_LOCAL_PG_URL"; then
    POSTHORN_DATABASE_URL="postgres://postgres@127.0.0.1:5432/posthorn"
  else
    start_private_postgres
  fi
  admin=$(pg_url_with_db "$POSTHORN_DATABASE_URL" postgres)
  if [[ "$(pg_psql -At "$admin" -c "SELECT 1 FROM pg_database WHERE datname = 'posthorn'")" != 1 ]]; then
    say "creating the database posthorn"
    pg_psql "$admin" -c 'CREATE DATABASE posthorn'
  fi
  say "database: $POSTHORN_DATABASE_URL"
  export POSTHORN_DATABASE_URL
fi

if [[ -z "${POSTHORN_JWT_SECRET:-}" ]]; then
  secret_file="$data_dir/jwt-secret"
  if [[ ! -s "$secret_file" ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret_file")
    say "generated a token secret in $secret_file"
  fi
  POSTHORN_JWT_SECRET=$(<"$secret_file")
  export POSTHORN_JWT_SECRET
fi

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
say "building posthorn (cargo build --release)"
cargo build --release --locked --quiet --bin posthorn
exec target/release/posthorn "${@:-serve}"
