// Package policies holds every gate rebalancer applies, as pure functions over a
// cluster snapshot and a time: policy matching, ownership and opt-outs, PDB and
// local-storage blockers, pods that cannot move, cluster health, maintenance windows
// and cooldowns. The analyzer that chooses candidates and the executor that re-checks
// them before each batch call the very same functions, so the rules that proposed a
// node are the rules that let it be touched.
package policies
