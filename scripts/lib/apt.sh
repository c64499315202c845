# Sourced by the ensure-* scripts (after they define `say`): installs a Debian package when its
# command is missing, saying so; needs root to install, and says what to do without it.
# Usage: apt_install_missing <command> <package> [extra apt-get install options...]
#        apt_install <what is missing> <package> [extra apt-get install options...] (the caller
#        has checked that it is missing)

apt_install_missing() {
  local command=$1
  command -v "$command" >/dev/null 2>&1 && return 0
  apt_install "$@"
}

apt_install() {
  local what=$1 package=$2
  shift 2
  if [ "$(id -u)" -ne 0 ]; then
    say "$what is not installed and we are not root: install it (apt-get install $package) and retry" >&2
    exit 1
  fi
  say "$what is not installed: installing Debian's $package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" "$package" >/dev/null
}
