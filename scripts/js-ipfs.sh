#!/usr/bin/env bash
# Prints the path of the `jsipfs` command the IPFS tests (tests/tests/ipfs.rs) run, installing it
# first if needed: js-ipfs 0.66.1 from npm, with the overrides of tests/js-ipfs/package.json
# (without them it does not start offline), into target/test-tools/js-ipfs/ (ignored by git;
# `cargo clean` removes it; ~200 MB), so a second run reuses it. kubo is not used: npm's `kubo`
# package downloads its binary at install time, from outside the npm registry. All of this
# script's own output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/test-tools/js-ipfs
bin=$dir/node_modules/.bin/jsipfs
if [ ! -x "$bin" ] || ! cmp -s tests/js-ipfs/package.json "$dir/package.json"; then
  if ! command -v npm >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >&2
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cp tests/js-ipfs/package.json "$dir/"
  (cd "$dir" && npm install --omit=optional --no-audit --no-fund --loglevel=error >&2)
fi
echo "js-ipfs $(node -p "require('./$dir/node_modules/ipfs/package.json').version")" >&2
echo "$PWD/$bin"
