#!/usr/bin/env bash
# make demo: the main job of rebalancer end to end on this machine — a local control
# plane with 6 older KWOK nodes, a git remote holding a policy, then analyze, propose,
# a reviewer's merge, the controller running the plan one step per line, and the audit
# trail. Needs only Go and git. The driver is hack/demo/main.go; it stops everything it
# started when it ends, is interrupted or killed, and removes its temporary directory.
# Extra arguments go to the driver (--keep leaves the temporary directory behind).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/rebalancer ] || go build -o bin/rebalancer ./cmd/rebalancer
go build -o bin/rebalancer-demo ./hack/demo
exec ./bin/rebalancer-demo --bin bin/rebalancer "$@"
