// Package livetest runs the analyzer against the real local control plane. It is a
// package of its own so that the planner's unit tests and benchmarks do not start a
// cluster they do not use.
package livetest
