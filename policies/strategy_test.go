package policies

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

func render(steps []api.Step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%d:%s:%s ", s.Batch, s.Action, s.Node)
	}
	return strings.TrimSpace(b.String())
}

func TestStrategies(t *testing.T) {
	cases := []struct {
		strategy api.Strategy
		nodes    []string
		max      int
		want     string
	}{
		{api.StrategyRolling, []string{"a", "b"}, 1,
			"1:provision:a 1:waitReady:a 1:cordon:a 1:drain:a 1:verify:a 1:terminate:a " +
				"2:provision:b 2:waitReady:b 2:cordon:b 2:drain:b 2:verify:b 2:terminate:b"},
		{api.StrategyRolling, []string{"a", "b", "c"}, 2,
			"1:provision:a 1:provision:b 1:waitReady:a 1:waitReady:b 1:cordon:a 1:cordon:b 1:drain:a 1:drain:b 1:verify:a 1:verify:b 1:terminate:a 1:terminate:b " +
				"2:provision:c 2:waitReady:c 2:cordon:c 2:drain:c 2:verify:c 2:terminate:c"},
		{api.StrategySurge, []string{"a", "b", "c"}, 2,
			"1:provision:a 1:provision:b 1:provision:c 1:waitReady:a 1:waitReady:b 1:waitReady:c " +
				"2:cordon:a 2:cordon:b 2:drain:a 2:drain:b 2:verify:a 2:verify:b " +
				"3:cordon:c 3:drain:c 3:verify:c 4:terminate:a 4:terminate:b 4:terminate:c"},
		{api.StrategyBlueGreen, []string{"a", "b", "c"}, 2,
			"1:provision:a 1:provision:b 1:provision:c 1:waitReady:a 1:waitReady:b 1:waitReady:c 1:cordon:a 1:cordon:b 1:cordon:c " +
				"2:drain:a 2:drain:b 2:verify:a 2:verify:b 3:drain:c 3:verify:c 4:terminate:a 4:terminate:b 4:terminate:c"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.strategy, tc.max), func(t *testing.T) {
			s, err := StrategyFor(tc.strategy)
			require.NoError(t, err)
			steps := s.Steps(tc.nodes, tc.max)
			assert.Equal(t, tc.want, render(steps))
			// Every node goes through every action exactly once, make-before-break:
			// its replacement is Ready before it is cordoned, drained before terminated.
			for _, n := range tc.nodes {
				pos := map[api.Action]int{}
				for i, st := range steps {
					if st.Node == n {
						_, dup := pos[st.Action]
						assert.False(t, dup)
						pos[st.Action] = i
					}
				}
				assert.Len(t, pos, 6)
				assert.Less(t, pos[api.ActionWaitReady], pos[api.ActionCordon])
				assert.Less(t, pos[api.ActionCordon], pos[api.ActionDrain])
				assert.Less(t, pos[api.ActionDrain], pos[api.ActionTerminate])
			}
		})
	}
	_, err := StrategyFor("canary")
	assert.Error(t, err)
}
