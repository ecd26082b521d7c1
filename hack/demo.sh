#!/usr/bin/env bash
# The demo on the embedded default: checks the example GitOps repository the way the
# required check on a plan PR would, then shows what a bad plan looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./bin/rebalancer
repo=deploy/examples/gitops-repo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "rebalancer version"
$bin version

step "rebalancer validate $repo   (a policy, a merged plan and its status)"
$bin validate "$repo"

step "the same plan after someone edited a candidate by hand and mistyped the strategy"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r "$repo/." "$tmp/"
plan=$(ls "$tmp"/rebalancer/plans/*.yaml | head -1)
sed -i -e 's|providerID: kwok://worker-a2|providerID: kwok://worker-b7|' -e 's|strategy: rolling|strategy: rollling|' "$plan"
set +e
$bin validate "$tmp" | sed "s|$tmp/||"
code=${PIPESTATUS[0]}
set -e
echo "exit status $code (1: invalid content; 2 would be a usage error)"
