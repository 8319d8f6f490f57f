#!/usr/bin/env bash
# The project's test command (README): sets up what the suite needs on a machine that has
# only a Rust toolchain and a Docker engine, then builds the binaries and runs every test
# (unit, console snapshots, end-to-end on the real engine) with cargo-nextest.
# Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "tests/run.sh: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
  say "the Docker engine does not answer (docker info failed): start it, or set DOCKER_HOST"
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  say "outside CI the end-to-end tests will skip and say so"
fi
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing tmux (the console tests drive the real console in it)"
    (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null
  else
    say "tmux is missing: install it (the console tests drive the real console in it)"
    exit 1
  fi
fi
# The "any agent" tests build an image from the host's own Python and run a TLS stub with
# openssl, the daemon makes agents' workspaces with mkfs.ext4 and loop mounts, and the
# contexts tests reach a daemon through an sshd they start on localhost: Debian's python3,
# openssl, e2fsprogs, mount and openssh (client and server), if they are missing.
missing=()
ls /usr/bin/python3.[0-9]* >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} (the any-agent and contexts tests use them)"
    (apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null
  else
    say "missing ${missing[*]}: the tests that need them skip outside CI and fail in it"
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest from crates.io (once; it runs each test in its own process)"
  cargo install --locked cargo-nextest
fi

# An image that is not ours, for the "any agent" tests: Debian's static busybox (its
# package, from Debian's archive; no container registry is involved).
assets=target/test-assets
if [ ! -x "$assets/busybox" ]; then
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    say "fetching Debian's busybox-static (the end-to-end tests build an image from it)"
    tmp=$(mktemp -d)
    fetch() { (cd "$tmp" && apt-get download -qq busybox-static >/dev/null 2>&1); }
    if ! fetch && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      fetch || true
    fi
    if ls "$tmp"/busybox-static_*.deb >/dev/null 2>&1; then
      dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
      mkdir -p "$assets"
      install -m 0755 "$tmp/x/bin/busybox" "$assets/busybox"
    fi
    rm -rf "$tmp"
  fi
  if [ ! -x "$assets/busybox" ]; then
    say "no static busybox (apt-get download busybox-static failed)"
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    say "outside CI the tests that need it will skip and say so"
  fi
fi

# A second node for the swarm test across two nodes: Debian's own docker.io engine on a
# minimal Debian root, made by debootstrap from Debian's archive (no container registry),
# run as a container beside this engine. The tag names the recipe: change both together.
node_image=agenfleet-test/node:bookworm-1
if docker info >/dev/null 2>&1 && ! docker image inspect "$node_image" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      say "installing debootstrap (it makes the second node's root for the two-node swarm test)"
      (apt-get update -qq && apt-get install -y -qq debootstrap) >/dev/null
    fi
    say "making $node_image: a Debian root with docker.io (debootstrap, about a minute)"
    root=$(mktemp -d)
    if debootstrap --variant=minbase --include=docker.io,iptables,iproute2,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1; then
      tar -C "$root" -c . | docker import - "$node_image" >/dev/null
    else
      tail -5 "$root.log" >&2
    fi
    rm -rf "$root" "$root.log"
  fi
  if ! docker image inspect "$node_image" >/dev/null 2>&1; then
    say "no $node_image (debootstrap needs root, apt-get and Debian's archive)"
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    say "outside CI the two-node swarm test will skip and say so"
  fi
fi

cargo build --workspace --bins --locked
exec cargo nextest run --workspace --locked "$@"
