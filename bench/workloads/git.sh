#!/bin/bash
# (f) git on a generated repository: init, add and commit the base tree, then
# one commit per overlay in commits/NN, then `git log -p` (to a file) and
# `git gc`. Deterministic: fixed identities and dates, no user/system config.
# Usage: git.sh DATA_DIR WORK_DIR   (prints HEAD and the object count)
set -e
data=$1 work=$2
rm -rf "$work"
mkdir -p "$work/home"
export HOME=$work/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
repo=$work/repo
cp -r "$data/base" "$repo"
cd "$repo"
git init -q -b main .
git add -A
git commit -q -m "base tree"
for c in "$data"/commits/*; do
    cp -r "$c"/. .
    git add -A
    git commit -q -m "commit $(basename "$c")"
done
git log -p --stat > "$work/log.txt"
git gc -q
git rev-parse HEAD
git count-objects -v | grep -E '^(count|in-pack)'
