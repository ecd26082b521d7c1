#!/usr/bin/env bash
# Runs every fuzz target of api/v1alpha1 for the time given as $1 (default 2m) each,
# one after another, and stops at the first finding: go test then prints the failure
# and writes the input to api/v1alpha1/testdata/fuzz/<target>/. Add the input to the
# regression tables in api/v1alpha1/fuzz_test.go rather than committing that file.
#
#   FUZZPARALLEL      processes fuzzing at once (default 1: leaves the other cores
#                     to whatever else runs on the machine)
#   FUZZMINIMIZETIME  time spent shrinking each new input (default 5s; go test's
#                     60s spends most of a short run minimizing instead of fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${1:-2m}
parallel=${FUZZPARALLEL:-1}
minimize=${FUZZMINIMIZETIME:-5s}
pkg=./api/v1alpha1/

targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzz targets found in $pkg" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
for target in $targets; do
	echo "== $target for $fuzztime"
	corpus=$pkg/testdata/fuzz/$target
	before=$(ls "$corpus" 2>/dev/null || true)
	note=""
	if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" \
		-parallel "$parallel" "$pkg" 2>&1 | tee "$log"; then
		# Go before 1.27 can report "context deadline exceeded" when -fuzztime runs
		# out while a worker is busy (go.dev/issue/75804): no input failed and none
		# was written. Anything else, or a new file in the corpus, is a finding.
		if [ "$(ls "$corpus" 2>/dev/null || true)" = "$before" ] &&
			grep -qx '    context deadline exceeded' "$log" &&
			! grep -q 'Failing input written' "$log"; then
			note=" (ended with Go's 'context deadline exceeded' shutdown race, go.dev/issue/75804: no failing input)"
			echo "fuzz.sh: $target$note" >&2
		else
			echo "fuzz.sh: $target found a failing input: see above" >&2
			exit 1
		fi
	fi
	summary+=("$(printf '%-20s %s%s' "$target" "$(grep -o 'elapsed: .*execs: [0-9]*' "$log" | tail -1)" "$note")")
done

echo "== every target passed"
printf '%s\n' "${summary[@]}"
