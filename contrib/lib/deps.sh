# Sourced by contrib/check.sh and contrib/demo.sh: installs the Debian 12
# packages the build and the tests need, quietly and only when missing.

netbootfs_packages=(
  build-essential cmake ninja-build ccache pkg-config
  libfuse3-dev fuse3 libcurl4-openssl-dev liblmdb-dev lmdb-utils robin-map-dev libspdlog-dev
  libgtest-dev libgmock-dev libssl-dev libxml2-dev nlohmann-json3-dev libcli11-dev
  libtomlplusplus-dev libsystemd-dev libmicrohttpd-dev libarchive-dev
  nginx tftpd-hpa tftp-hpa atftp python3 curl attr bc psmisc procps iproute2 util-linux openssl squid
  dnsmasq-base
)

install_deps() {
  local missing=()
  for p in "${netbootfs_packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages (run as root to install them): ${missing[*]}" >&2
    return 1
  fi
  # Installing nginx or tftpd-hpa must not start their services on ports 80
  # and 69: the tests start their own on loopback. (dnsmasq-base is the
  # binary and its user without the service: the package dnsmasq would start
  # one on port 53.)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_and_build BUILD_DIR [CMAKE_ARGS...]
configure_and_build() {
  local dir=$1; shift
  cmake -S "$NETBOOTFS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}
