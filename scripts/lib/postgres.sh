# shellcheck shell=bash
# ensure_postgres: find or start a PostgreSQL server for the tests and export
# POSTHORN_TEST_DATABASE_URL, a URL whose role may create and drop databases.
#
#   POSTHORN_TEST_DATABASE_URL      used as is when it works
#   POSTHORN_TEST_FORCE_PRIVATE_PG  =1: always start a throwaway server
#   POSTHORN_TEST_PG_PORT           port of the throwaway server (default 54329)

[[ -n "${_POSTHORN_POSTGRES_SH:-}" ]] && return 0
_POSTHORN_POSTGRES_SH=1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

POSTHORN_LOCAL_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"

# Debian's psql on PATH is a Perl wrapper that picks a client version at every call, which costs more
# CPU than the query when a script polls; the newest client under /usr/lib/postgresql is used directly.
_pg_find_psql() {
  local candidate
  _POSTHORN_PSQL=psql
  for candidate in /usr/lib/postgresql/*/bin/psql; do
    [[ -x "$candidate" ]] || continue
    [[ "$_POSTHORN_PSQL" == psql ]] || [[ "$(printf '%s\n' "$_POSTHORN_PSQL" "$candidate" | sort -V | tail -1)" == "$candidate" ]] &&
      _POSTHORN_PSQL=$candidate
  done
  return 0
}
_pg_find_psql

# -X: ignore ~/.psqlrc; -w: never prompt for a password (CI has no stdin).
# client_min_messages: no NOTICE chatter from DROP ... IF EXISTS.
pg_psql() {
  PGCONNECT_TIMEOUT=5 PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
    "$_POSTHORN_PSQL" -X -w -q -v ON_ERROR_STOP=1 "$@"
}

# Hide the password when a URL is printed.
pg_redact_url() { sed -E 's#(://[^:/@]+):[^@/]*@#\1:***@#' <<<"$1"; }

# The same URL pointing at another database (query string kept).
pg_url_with_db() {
  local url=$1 db=$2 base query scheme rest
  base=${url%%\?*}
  query=${url#"$base"}
  scheme=${base%%://*}
  rest=${base#*://}
  printf '%s://%s/%s%s\n' "$scheme" "${rest%%/*}" "$db" "$query"
}

# The URL with query parameter NAME=VALUE added, unless it already has NAME.
pg_url_with_param() {
  if [[ "$1" =~ [?\&]$2= ]]; then printf '%s\n' "$1"; else pg_url_set_param "$@"; fi
}

# The URL with query parameter NAME set to VALUE: replaced if it is there, added if not.
pg_url_set_param() {
  local url=$1 name=$2 value=$3 query="" pair kept=()
  [[ "$url" == *\?* ]] && query=${url#*\?}
  local IFS='&'
  for pair in $query; do
    [[ -n "$pair" && "$pair" != "$name="* ]] && kept+=("$pair")
  done
  kept+=("$name=$value")
  printf '%s?%s\n' "${url%%\?*}" "${kept[*]}"
}

# True if the URL accepts connections and its role can create databases.
pg_url_usable() {
  local out
  out=$(pg_psql -At -d "$1" \
    -c "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user" \
    2>/dev/null) || return 1
  [[ "$out" == t ]]
}

# Drop every database named posthorn_test_*: tests create them and a crashed
# or killed run leaves them behind.
pg_drop_test_databases() {
  local url=${1:-$POSTHORN_TEST_DATABASE_URL} n
  n=$(pg_psql -At -d "$url" \
    -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'posthorn\_test\_%'") || return 1
  [[ "$n" == 0 ]] && return 0
  step "dropping $n posthorn_test_* database(s)"
  pg_psql -d "$url" <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname)
FROM pg_database WHERE datname LIKE 'posthorn\_test\_%'
\gexec
SQL
}

_pg_ensure_client() {
  command -v psql >/dev/null && return 0
  if is_root; then
    apt_install postgresql-client
    _pg_find_psql
  else
    die "psql not found. Install the PostgreSQL client: sudo apt-get install --no-install-recommends postgresql-client"
  fi
}

_pg_local_answers() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h 127.0.0.1 -p 5432 -t 3
  else
    tcp_open 127.0.0.1 5432
  fi
}

# Directory holding initdb and pg_ctl: Debian's highest version, else PATH.
_pg_find_bindir() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && best+="$d"$'\n'
  done
  if [[ -n "$best" ]]; then
    printf '%s' "$best" | sort -V | tail -n 1
    return 0
  fi
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  return 1
}

# initdb and postgres refuse to run as root: as root, run them as the
# postgres system user.
_pg_as_owner() {
  if ! is_root; then
    "$@"
  elif command -v runuser >/dev/null; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

_pg_ensure_os_user() {
  id -u postgres >/dev/null 2>&1 && return 0
  step "creating the postgres system user"
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin postgres
}

_pg_stop_private() {
  local bindir=$1 dir=$2
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -s stop) \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$dir" 2>/dev/null || true
}

# Remove throwaway servers of earlier runs that were killed before their
# cleanup ran: their owner.pid names a process that is gone.
_pg_reap_stale() {
  local bindir=$1 base=$2 d owner
  for d in "$base"/posthorn-pg.*; do
    [[ -f "$d/owner.pid" ]] || continue
    owner=$(<"$d/owner.pid")
    [[ -n "$owner" && -d "/proc/$owner" ]] && continue
    note "removing a stale throwaway server in $d"
    _pg_stop_private "$bindir" "$d"
  done
}

_pg_start_private() {
  local bindir base dir="" candidate port tries=1 version
  if ! bindir=$(_pg_find_bindir); then
    if is_root; then
      apt_install postgresql
      bindir=$(_pg_find_bindir) || die "postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
    else
      die "no usable PostgreSQL: nothing usable at POSTHORN_TEST_DATABASE_URL or 127.0.0.1:5432 (user postgres), and initdb/pg_ctl are not under /usr/lib/postgresql/*/bin nor on PATH. Install the server (sudo apt-get install --no-install-recommends postgresql), or set POSTHORN_TEST_DATABASE_URL to a server whose role may create databases."
    fi
  fi
  is_root && _pg_ensure_os_user

  # A directory under TMPDIR; as root it must also be reachable by the
  # postgres user, which a TMPDIR under /root is not, so /tmp is the fallback.
  base=${TMPDIR:-/tmp}
  for candidate in "$base" /tmp; do
    _pg_reap_stale "$bindir" "$candidate"
    dir=$(mktemp -d "$candidate/posthorn-pg.XXXXXX") || continue
    if ! is_root; then break; fi
    chown postgres:postgres "$dir"
    if _pg_as_owner test -w "$dir" 2>/dev/null; then break; fi
    rm -rf "$dir"
    dir=""
  done
  [[ -n "$dir" ]] || die "could not make a data directory for PostgreSQL under $base or /tmp"
  echo "$$" >"$dir/owner.pid"
  on_exit _pg_stop_private "$bindir" "$dir"

  port=${POSTHORN_TEST_PG_PORT:-54329}
  [[ -z "${POSTHORN_TEST_PG_PORT:-}" ]] && tries=20
  while tcp_open 127.0.0.1 "$port"; do
    ((--tries > 0)) || die "port $port is already in use (set POSTHORN_TEST_PG_PORT to a free port)"
    port=$((port + 1))
  done

  version=$("$bindir/pg_ctl" --version | awk '{print $3}')
  step "starting a throwaway PostgreSQL $version on 127.0.0.1:$port (data in $dir)"
  if ! (cd "$dir" && _pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
    -E UTF8 --no-locale --no-sync) >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  fi
  # Durability is pointless for a throwaway server; many tests run at once.
  if ! (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s \
    -o "-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start); then
    cat "$dir/server.log" >&2 || true
    die "the throwaway PostgreSQL server did not start"
  fi

  export POSTHORN_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export POSTHORN_TEST_PG_DIR="$dir"
  local i
  for ((i = 0; i < 60; i++)); do
    pg_url_usable "$POSTHORN_TEST_DATABASE_URL" && break
    sleep 0.5
  done
  pg_url_usable "$POSTHORN_TEST_DATABASE_URL" || {
    cat "$dir/server.log" >&2 || true
    die "the throwaway PostgreSQL server does not accept connections"
  }
  step "PostgreSQL: using a throwaway server, $POSTHORN_TEST_DATABASE_URL (stopped and removed at exit)"
}

ensure_postgres() {
  step "PostgreSQL: looking for a server"
  _pg_ensure_client
  # A throwaway server started by the calling script (test.sh running
  # contract-test.sh) is reused, forced or not.
  if [[ -n "${POSTHORN_TEST_PG_DIR:-}" && -n "${POSTHORN_TEST_DATABASE_URL:-}" ]] &&
    pg_url_usable "$POSTHORN_TEST_DATABASE_URL"; then
    export POSTHORN_TEST_DATABASE_URL
    step "PostgreSQL: using the throwaway server of the calling script, $POSTHORN_TEST_DATABASE_URL"
    return 0
  fi
  if [[ "${POSTHORN_TEST_FORCE_PRIVATE_PG:-0}" != 1 ]]; then
    if [[ -n "${POSTHORN_TEST_DATABASE_URL:-}" ]]; then
      if pg_url_usable "$POSTHORN_TEST_DATABASE_URL"; then
        export POSTHORN_TEST_DATABASE_URL
        step "PostgreSQL: using POSTHORN_TEST_DATABASE_URL, $(pg_redact_url "$POSTHORN_TEST_DATABASE_URL")"
        return 0
      fi
      warn "POSTHORN_TEST_DATABASE_URL=$(pg_redact_url "$POSTHORN_TEST_DATABASE_URL") is unreachable or cannot create databases; looking elsewhere"
    fi
    if _pg_local_answers && pg_url_usable "$POSTHORN_LOCAL_PG_URL"; then
      export POSTHORN_TEST_DATABASE_URL="$POSTHORN_LOCAL_PG_URL"
      step "PostgreSQL: using the local server, $POSTHORN_TEST_DATABASE_URL"
      return 0
    fi
  fi
  _pg_start_private
}
