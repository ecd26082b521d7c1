package policies

import (
	"time"
)

// Cooldown says until when a node group rests after its last plan that changed
// something finished; the zero time means no cooldown. lastFinished is zero when
// there was none.
func Cooldown(now, lastFinished time.Time, period time.Duration) (until time.Time, cooling bool) {
	if lastFinished.IsZero() || period <= 0 {
		return time.Time{}, false
	}
	until = lastFinished.Add(period)
	return until, now.Before(until)
}
