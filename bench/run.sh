#!/usr/bin/env bash
# Runs the project's benchmarks and prints them as a table.
#   bench/run.sh [PATTERN] [PACKAGES...]      default: every benchmark in every package
set -euo pipefail
cd "$(dirname "$0")/.."
pattern="${1:-.}"
shift || true
pkgs=("${@:-./...}")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench "$pattern" -benchmem -count "${COUNT:-1}" "${pkgs[@]}" | tee "$out" >&2
printf '\n%-60s %14s %14s %12s\n' benchmark ns/op B/op allocs/op
awk '/^pkg:/ {pkg=$2} /^Benchmark/ {
  name=$1; ns=""; b=""; a="";
  for (i=2;i<=NF;i++) { if ($(i)=="ns/op") ns=$(i-1); if ($(i)=="B/op") b=$(i-1); if ($(i)=="allocs/op") a=$(i-1) }
  sub(/-[0-9]+$/, "", name); split(pkg, p, "/");
  printf "%-60s %14s %14s %12s\n", p[length(p)] "." name, ns, b, a }' "$out"
