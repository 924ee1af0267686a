#!/usr/bin/env bash
# Checks the Helm chart helm/posthorn offline, without a cluster or a helm
# binary:
#
#   - a venv at target/tools/chart-venv with the pinned tools of
#     scripts/requirements-chart.txt (helm-python-sdk: Helm's Go SDK as a
#     shared library; kubernetes-validate: the Kubernetes OpenAPI schemas);
#   - scripts/lib/check_chart.py: helm lint --strict; renders with every value
#     set in helm/posthorn/ci/; every document parses as YAML; the core
#     manifests pass `kubernetes-validate -k 1.30.0 --strict` (the
#     ServiceMonitor CRD is checked by shape); the chart's invariants (secrets
#     only through secretKeyRef, securityContext, termination grace, probes,
#     selectors, optional resources); renders that must fail (no secrets, ...);
#     values.yaml, values.schema.json and the chart's README agree.
#
# Prints one line per check and exits non-zero if any fails. A pass is
# remembered in target/tools/check-chart.ok, keyed by a hash of the chart,
# these scripts and the requirements; POSTHORN_CHECK_FORCE=1 checks again.
#
#   POSTHORN_TOOLS_DIR  where the venv and the stamp live (default: $PWD/target/tools)
set -euo pipefail
SELF="$(realpath "${BASH_SOURCE[0]}")"
cd "$(dirname "$SELF")/.."

# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

TOOLS_DIR="${POSTHORN_TOOLS_DIR:-$PWD/target/tools}"
VENV="$TOOLS_DIR/chart-venv"
REQ=scripts/requirements-chart.txt
CHECKER=scripts/lib/check_chart.py
STAMP="$TOOLS_DIR/check-chart.ok"

# --- the venv ---------------------------------------------------------------
if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
  note "the chart venv is broken; recreating it"
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    is_root || die "python3 with venv is needed: sudo apt-get install --no-install-recommends python3 python3-venv"
    apt_install python3 python3-venv
  fi
  mkdir -p "$TOOLS_DIR"
  python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
fi
# Reinstall only when the requirements or the interpreter changed.
venv_stamp="$VENV/.requirements.sha256"
want=$({ cat "$REQ"; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
if [[ ! -f "$venv_stamp" || "$(<"$venv_stamp")" != "$want" ]]; then
  step "pip install -r $REQ (into $VENV)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQ" ||
    die "pip install of the chart tools failed"
  echo "$want" >"$venv_stamp"
fi

# --- the pass stamp ---------------------------------------------------------
inputs_hash() {
  {
    cat "$SELF" "$CHECKER" "$REQ"
    "$VENV/bin/python" -VV
    find helm/posthorn -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
want_hash=$(inputs_hash)
if [[ "${POSTHORN_CHECK_FORCE:-0}" != 1 && -f "$STAMP" && "$(<"$STAMP")" == "$want_hash" ]]; then
  printf 'ok    chart: unchanged since the last pass (POSTHORN_CHECK_FORCE=1 checks again)\n'
  exit 0
fi

# --- the checks -------------------------------------------------------------
rm -f "$STAMP"
if "$VENV/bin/python" "$CHECKER"; then
  echo "$want_hash" >"$STAMP"
else
  printf 'chart: some checks failed\n'
  exit 1
fi
