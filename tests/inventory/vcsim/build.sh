#!/bin/sh
# Build the vCenter simulator used by the vSphere connector tests from Debian's govmomi sources
# (packages golang-go + golang-github-vmware-govmomi-dev), offline, in GOPATH mode.
# The binary is cached in <repo>/.cache/vcsim/ and rebuilt only when main.go or govmomi changes.
# Prints the binary's path on success; exits 2 when go or govmomi is not installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
gopath=${VCSIM_GOPATH:-/usr/share/gocode}
cache=${VCSIM_CACHE:-$repo/.cache/vcsim}

command -v go >/dev/null 2>&1 || { echo "go not installed (apt-get install golang-go)" >&2; exit 2; }
[ -d "$gopath/src/github.com/vmware/govmomi/simulator" ] || {
  echo "govmomi sources not found in $gopath (apt-get install golang-github-vmware-govmomi-dev)" >&2; exit 2; }

govmomi_version=$(dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev 2>/dev/null || echo unknown)
key=$( (cat "$here/main.go"; echo "$govmomi_version"; go version) | sha256sum | cut -c1-16)
bin="$cache/vcsim-$key"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  rm -f "$cache"/vcsim-*
  GO111MODULE=off GOPATH="$gopath" GOCACHE="$cache/gocache" GOFLAGS= CGO_ENABLED=0 \
    go build -o "$bin.tmp" "$here/main.go"
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
