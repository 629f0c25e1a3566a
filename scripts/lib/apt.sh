# Sourced (bash) by the set-up scripts: which Debian packages are missing, and installing
# them quietly without recommends. Root.

# The packages of "$@" that dpkg does not list as installed, one per line.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || echo "$pkg"
    done
}

# apt-get install "$@" (after an index update unless APT_UPDATED=1), quietly.
apt_install() {
    (($#)) || return 0
    [[ ${APT_UPDATED:-0} == 1 ]] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
