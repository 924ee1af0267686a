# shellcheck shell=bash
# ensure_python_tools: a venv with the pinned test tools of
# scripts/requirements-test.txt; exports POSTHORN_TEST_PYTHON and puts the
# venv's bin first on PATH.
#
#   POSTHORN_TOOLS_DIR  where the venv lives (default: $PWD/target/tools)

[[ -n "${_POSTHORN_PYTHON_SH:-}" ]] && return 0
_POSTHORN_PYTHON_SH=1
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

_py_ensure_python() {
  if ! command -v python3 >/dev/null; then
    if is_root; then
      apt_install python3 python3-venv
    else
      die "python3 not found. Install it: sudo apt-get install --no-install-recommends python3 python3-venv"
    fi
  fi
  # Debian splits venv/ensurepip into python3-venv.
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if is_root; then
      apt_install python3-venv
    fi
    python3 -c 'import venv, ensurepip' 2>/dev/null ||
      die "python3 cannot make virtual environments (no venv/ensurepip module). Install it: sudo apt-get install --no-install-recommends python3-venv"
  fi
}

ensure_python_tools() {
  local tools_dir="${POSTHORN_TOOLS_DIR:-$PWD/target/tools}"
  local venv="$tools_dir/venv"
  local req="$POSTHORN_SCRIPTS_DIR/requirements-test.txt"
  local stamp="$venv/.requirements.sha256" want
  step "Python test tools: $venv"

  # A venv whose interpreter no longer runs (python upgraded or moved) is rebuilt.
  if [[ -e "$venv" ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    note "the venv is broken; recreating it"
    rm -rf "$venv"
  fi
  if [[ ! -x "$venv/bin/python" ]]; then
    _py_ensure_python
    mkdir -p "$tools_dir"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  fi

  # Reinstall only when the requirements or the interpreter changed.
  want=$({ cat "$req"; "$venv/bin/python" -VV; } | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
    step "pip install -r scripts/requirements-test.txt"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -r "$req" ||
      die "pip install of the test tools failed"
    echo "$want" >"$stamp"
  else
    note "already installed ($(sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' "$req" | paste -sd' '))"
  fi

  export POSTHORN_TEST_PYTHON="$venv/bin/python"
  case ":$PATH:" in
    *":$venv/bin:"*) ;;
    *) export PATH="$venv/bin:$PATH" ;;
  esac
}
