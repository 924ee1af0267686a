#!/usr/bin/env bash
# Offline checks of the Dockerfile (no container engine is needed):
#
#   - the build stage is rust:1-bookworm (or a pinned rust:1.NN[.P]-bookworm);
#   - every `cargo build` in it is the build command documented in README.md
#     (`cargo build --release --locked --bin posthorn`), and the last RUN of
#     the build stage is that command;
#   - every COPY source exists in the repository and is not excluded by
#     .dockerignore; no ADD;
#   - every file compiled into the binary (include_str!/include_bytes! and
#     sqlx::migrate! paths found under src/) is copied before the real build;
#   - the runtime stage is distroless, has a USER that is not root, no
#     shell-form RUN, exec-form ENTRYPOINT/CMD, no SHELL; ENTRYPOINT is the
#     binary copied from the build stage; EXPOSE matches POSTHORN_LISTEN;
#   - hadolint, when it is on PATH (it is not packaged by Debian: skipped
#     otherwise).
#
# Prints one line per check and exits non-zero if any fails. A pass is
# remembered in target/tools/check-dockerfile.ok, keyed by a hash of every
# input; POSTHORN_CHECK_FORCE=1 checks again anyway.
set -euo pipefail
SELF="$(realpath "${BASH_SOURCE[0]}")"
cd "$(dirname "$SELF")/.."

DOCKERFILE=Dockerfile
IGNOREFILE=.dockerignore
EXPECTED_BUILD='cargo build --release --locked --bin posthorn'
STAMP_DIR="${POSTHORN_TOOLS_DIR:-$PWD/target/tools}"
STAMP="$STAMP_DIR/check-dockerfile.ok"

failures=0
pass() { printf 'ok    dockerfile: %s\n' "$*"; }
fail() { printf 'FAIL  dockerfile: %s\n' "$*"; failures=$((failures + 1)); }

[[ -f "$DOCKERFILE" ]] || { fail "$DOCKERFILE not found"; exit 1; }

# --- the pass stamp ---------------------------------------------------------
inputs_hash() {
  {
    cat "$SELF" "$DOCKERFILE" README.md
    [[ -f "$IGNOREFILE" ]] && cat "$IGNOREFILE"
    command -v hadolint || true
    # What COPY sources and compiled-in paths resolve against.
    find . -path ./target -prune -o -path ./.git -prune -o -print | LC_ALL=C sort
    grep -rhoE '(include_str|include_bytes|migrate)!\([^)]*\)' src 2>/dev/null || true
  } | sha256sum | cut -d' ' -f1
}
want_hash=$(inputs_hash)
if [[ "${POSTHORN_CHECK_FORCE:-0}" != 1 && -f "$STAMP" && "$(<"$STAMP")" == "$want_hash" ]]; then
  pass "unchanged since the last pass (POSTHORN_CHECK_FORCE=1 checks again)"
  exit 0
fi

# --- parse ------------------------------------------------------------------
# One logical instruction per line: "<stage index><TAB><KEYWORD><TAB><arguments>",
# with line continuations joined and comment lines dropped.
mapfile -t INSTRUCTIONS < <(awk '
  function flush() {
    if (buf != "") {
      kw = buf; sub(/[ \t].*$/, "", kw); kw = toupper(kw)
      args = buf; sub(/^[^ \t]+[ \t]*/, "", args)
      if (kw == "FROM") stage++
      printf "%d\t%s\t%s\n", stage, kw, args
    }
    buf = ""
  }
  BEGIN { stage = -1; buf = "" }
  /^[ \t]*#/ { next }
  /^[ \t]*$/ { if (buf == "") next }
  {
    line = $0
    sub(/^[ \t]+/, "", line)
    cont = (line ~ /\\[ \t]*$/)
    if (cont) sub(/\\[ \t]*$/, "", line)
    buf = (buf == "") ? line : buf " " line
    if (!cont) flush()
  }
  END { flush() }
' "$DOCKERFILE")

stage_count=0
STAGE_IMAGE=()
for ins in "${INSTRUCTIONS[@]}"; do
  IFS=$'\t' read -r st kw args <<<"$ins"
  if [[ "$kw" == FROM ]]; then
    read -r -a from <<<"$args"
    idx=0
    [[ "${from[0]}" == --platform=* ]] && idx=1
    STAGE_IMAGE[st]="${from[$idx]}"
    stage_count=$((st + 1))
  fi
done
last_stage=$((stage_count - 1))

# --- stages -----------------------------------------------------------------
if ((stage_count >= 2)); then
  pass "multi-stage ($stage_count stages: ${STAGE_IMAGE[*]})"
else
  fail "expected a build stage and a runtime stage, found $stage_count FROM"
  exit 1
fi
if [[ "${STAGE_IMAGE[0]}" =~ ^rust:1(\.9[0-9](\.[0-9]+)?)?-bookworm$ ]]; then
  pass "build stage is ${STAGE_IMAGE[0]}"
else
  fail "build stage is ${STAGE_IMAGE[0]}, expected rust:1-bookworm or rust:1.9x-bookworm"
fi
runtime_image="${STAGE_IMAGE[$last_stage]}"
if [[ "$runtime_image" == gcr.io/distroless/cc-debian12:nonroot ]]; then
  pass "runtime stage is $runtime_image"
else
  fail "runtime stage is $runtime_image, expected gcr.io/distroless/cc-debian12:nonroot"
fi

# --- the build command --------------------------------------------------------
# Build commands documented in README.md, in backticks.
# shellcheck disable=SC2016 # the backticks are literal
mapfile -t README_BUILDS < <(grep -oE '`cargo build [^`]*`' README.md | tr -d '`' | sort -u)
if printf '%s\n' "${README_BUILDS[@]}" | grep -qxF "$EXPECTED_BUILD"; then
  pass "README.md documents \`$EXPECTED_BUILD\`"
else
  fail "README.md does not document \`$EXPECTED_BUILD\`"
fi

build_cmds=()
last_build_run=""
last_build_run_index=-1
i=0
for ins in "${INSTRUCTIONS[@]}"; do
  IFS=$'\t' read -r st kw args <<<"$ins"
  if ((st < last_stage)) && [[ "$kw" == RUN ]]; then
    last_build_run="$args"
    last_build_run_index=$i
    # Every `cargo build ...` up to the next shell operator.
    while IFS= read -r cmd; do
      [[ -n "$cmd" ]] && build_cmds+=("$(tr -s ' \t' ' ' <<<"$cmd" | sed 's/ *$//')")
    done < <(grep -oE 'cargo build[^;&|]*' <<<"$args" || true)
  fi
  i=$((i + 1))
done
if ((${#build_cmds[@]} == 0)); then
  fail "no \`cargo build\` in the build stage"
else
  mismatched=0
  for cmd in "${build_cmds[@]}"; do
    if [[ "$cmd" != "$EXPECTED_BUILD" ]]; then
      fail "build stage runs \`$cmd\`, README.md documents \`$EXPECTED_BUILD\`"
      mismatched=1
    fi
  done
  ((mismatched)) || pass "all ${#build_cmds[@]} \`cargo build\` commands are \`$EXPECTED_BUILD\`"
fi
if [[ "$(tr -s ' \t' ' ' <<<"$last_build_run" | sed 's/ *$//')" == "$EXPECTED_BUILD" ]]; then
  pass "the last RUN of the build stage is the real build"
else
  fail "the last RUN of the build stage is \`$last_build_run\`, expected \`$EXPECTED_BUILD\`"
fi

# --- .dockerignore ------------------------------------------------------------
IGNORE_PATTERNS=()
if [[ -f "$IGNOREFILE" ]]; then
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    [[ -z "$line" || "$line" == \#* ]] && continue
    IGNORE_PATTERNS+=("$line")
  done <"$IGNOREFILE"
  for must in target .git data; do
    if printf '%s\n' "${IGNORE_PATTERNS[@]}" | grep -qxE "/?$must/?"; then
      pass ".dockerignore excludes $must"
    else
      fail ".dockerignore does not exclude $must"
    fi
  done
else
  fail "$IGNOREFILE not found (the whole tree, target/ included, would be the build context)"
fi

# True if .dockerignore excludes PATH: a path is excluded when the last pattern
# that matches it or one of its parents is not a `!` exception (a simplified
# version of Docker's rules: `*` also crosses `/`).
ignored() {
  local path="${1#./}" excluded=1 pattern negate prefix part
  path="${path%/}"
  for pattern in "${IGNORE_PATTERNS[@]}"; do
    negate=0
    if [[ "$pattern" == '!'* ]]; then negate=1; pattern="${pattern#!}"; fi
    pattern="${pattern#/}"
    pattern="${pattern%/}"
    pattern="${pattern//\*\*\//*}"
    prefix=""
    local matched=0
    IFS=/ read -r -a parts <<<"$path"
    for part in "${parts[@]}"; do
      prefix="${prefix:+$prefix/}$part"
      # shellcheck disable=SC2053 # the pattern is a glob on purpose
      if [[ "$prefix" == $pattern ]]; then matched=1; break; fi
    done
    if ((matched)); then
      if ((negate)); then excluded=1; else excluded=0; fi
    fi
  done
  return "$excluded"
}

# --- COPY sources -------------------------------------------------------------
# Paths copied from the build context, with the index of their instruction.
declare -A COPIED_AT=()
copy_ok=1
i=0
for ins in "${INSTRUCTIONS[@]}"; do
  IFS=$'\t' read -r st kw args <<<"$ins"
  if [[ "$kw" == ADD ]]; then
    fail "ADD in stage $st: use COPY (ADD fetches URLs and unpacks archives)"
    copy_ok=0
  fi
  if [[ "$kw" == COPY && "$args" != *--from=* ]]; then
    if [[ "$args" == \[* ]]; then
      mapfile -t words < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$args")
    else
      read -r -a words <<<"$args"
    fi
    srcs=()
    for w in "${words[@]}"; do [[ "$w" == --* ]] || srcs+=("$w"); done
    unset 'srcs[${#srcs[@]}-1]' # the destination
    for src in "${srcs[@]}"; do
      src="${src#./}"
      src="${src%/}"
      if [[ ! -e "$src" ]]; then
        fail "COPY source $src (stage $st) does not exist"
        copy_ok=0
      elif ignored "$src"; then
        fail "COPY source $src (stage $st) is excluded by $IGNOREFILE"
        copy_ok=0
      else
        COPIED_AT[$src]=$i
      fi
    done
  fi
  i=$((i + 1))
done
((copy_ok)) && pass "every COPY source exists and is in the build context: ${!COPIED_AT[*]}"

# --- files compiled into the binary ---------------------------------------------
# include_str!/include_bytes! are relative to the source file; sqlx::migrate!
# is relative to the crate root.
compiled=()
while IFS=: read -r file _ match; do
  rel=$(sed -E 's/.*\("([^"]*)"\).*/\1/' <<<"$match")
  case "$match" in
    *migrate*) compiled+=("$(realpath -m --relative-to=. "$rel")") ;;
    *) compiled+=("$(realpath -m --relative-to=. "$(dirname "$file")/$rel")") ;;
  esac
done < <(grep -rnoE '(include_str|include_bytes|sqlx::migrate)!\("[^"]*"\)' src || true)
if ((${#compiled[@]} == 0)); then
  fail "found no include_str!/sqlx::migrate! under src/ (expected openapi.yaml and migrations)"
else
  compiled_ok=1
  for path in $(printf '%s\n' "${compiled[@]}" | sort -u); do
    covered=-1
    for src in "${!COPIED_AT[@]}"; do
      if [[ "$path" == "$src" || "$path" == "$src"/* || "$src" == . ]]; then
        covered=${COPIED_AT[$src]}
      fi
    done
    if ((covered < 0)); then
      fail "$path is compiled into the binary but never copied"
      compiled_ok=0
    elif ((covered > last_build_run_index)); then
      fail "$path is copied after the real cargo build"
      compiled_ok=0
    elif [[ ! -e "$path" ]]; then
      fail "$path is compiled into the binary but does not exist"
      compiled_ok=0
    fi
  done
  ((compiled_ok)) && pass "compiled-in paths are copied before the real build: $(printf '%s\n' "${compiled[@]}" | sort -u | paste -sd' ')"
fi

# --- runtime stage --------------------------------------------------------------
user=""
runtime_ok=1
entrypoint=""
cmd=""
expose=()
listen_port=""
binary_dest=""
for ins in "${INSTRUCTIONS[@]}"; do
  IFS=$'\t' read -r st kw args <<<"$ins"
  ((st == last_stage)) || continue
  case "$kw" in
    USER) user="$args" ;;
    RUN)
      if [[ "$args" != \[* ]]; then
        fail "shell-form RUN in the runtime stage (it has no shell): RUN $args"
        runtime_ok=0
      fi
      ;;
    SHELL)
      fail "SHELL in the runtime stage (it has no shell)"
      runtime_ok=0
      ;;
    ENTRYPOINT) entrypoint="$args" ;;
    CMD) cmd="$args" ;;
    EXPOSE) read -r -a more <<<"$args"; expose+=("${more[@]}") ;;
    ENV)
      if [[ "$args" =~ POSTHORN_LISTEN=[^[:space:]]*:([0-9]+) ]]; then
        listen_port="${BASH_REMATCH[1]}"
      fi
      ;;
    COPY)
      if [[ "$args" == *--from=* && "$args" == *target/release/posthorn* ]]; then
        binary_dest="${args##* }"
      fi
      ;;
  esac
done
((runtime_ok)) && pass "no shell-form RUN or SHELL in the runtime stage"

user_name="${user%%:*}"
group_name=""
[[ "$user" == *:* ]] && group_name="${user#*:}"
if [[ -z "$user" ]]; then
  fail "the runtime stage sets no USER (it would run as root)"
elif [[ "$user_name" == root || "$user_name" == 0 || "$group_name" == root || "$group_name" == 0 ]]; then
  fail "the runtime stage runs as $user"
else
  pass "runtime stage runs as USER $user"
fi

if [[ "$entrypoint" == \[* && ( -z "$cmd" || "$cmd" == \[* ) ]]; then
  pass "ENTRYPOINT $entrypoint and CMD ${cmd:-(none)} are exec form"
else
  fail "ENTRYPOINT/CMD must be exec form (JSON arrays): the runtime stage has no shell"
fi
entry_bin=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0])' "$entrypoint" 2>/dev/null || true)
if [[ -n "$binary_dest" && "$entry_bin" == "$binary_dest" ]]; then
  pass "ENTRYPOINT runs the binary copied from the build stage ($binary_dest)"
else
  fail "ENTRYPOINT ($entry_bin) is not the binary copied from the build stage (${binary_dest:-none})"
fi
if [[ -n "$listen_port" ]] && printf '%s\n' "${expose[@]}" | grep -qE "^$listen_port(/tcp)?$"; then
  pass "EXPOSE ${expose[*]} matches POSTHORN_LISTEN port $listen_port"
else
  fail "EXPOSE (${expose[*]:-none}) does not match the POSTHORN_LISTEN port (${listen_port:-unset})"
fi

# --- hadolint -------------------------------------------------------------------
if command -v hadolint >/dev/null; then
  if hadolint "$DOCKERFILE"; then
    pass "hadolint"
  else
    fail "hadolint"
  fi
else
  printf 'skip  dockerfile: hadolint is not installed (not packaged by Debian)\n'
fi

if ((failures > 0)); then
  printf 'dockerfile: %d check(s) failed\n' "$failures"
  rm -f "$STAMP"
  exit 1
fi
mkdir -p "$STAMP_DIR"
echo "$want_hash" >"$STAMP"
