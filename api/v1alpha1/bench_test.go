package v1alpha1

import (
	"testing"
)

// BenchmarkDecodePlan measures strict decoding plus validation of the example plan:
// the reconciler does this for every plan on every pass.
func BenchmarkDecodePlan(b *testing.B) {
	data := []byte(readExample(b, planFile))
	b.ReportAllocs()
	for b.Loop() {
		if _, errs := Decode("prod-general-20261127-3f9a1c.yaml", data, KindPlan); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
}
