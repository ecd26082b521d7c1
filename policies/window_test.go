package policies

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustSchedule(t *testing.T, tz string, windows ...string) *Schedule {
	t.Helper()
	s, err := NewSchedule(windows, tz)
	require.NoError(t, err)
	return s
}

func at(t *testing.T, tz, wall string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	require.NoError(t, err)
	v, err := time.ParseInLocation("2006-01-02 15:04", wall, loc)
	require.NoError(t, err)
	return v
}

func TestWindowContains(t *testing.T) {
	berlin := "Europe/Berlin"
	cases := []struct {
		name    string
		tz      string
		windows []string
		now     time.Time
		inside  bool
	}{
		{"inside Sat window", berlin, []string{"Sat 00:00-06:00"}, at(t, berlin, "2026-11-28 03:00"), true},
		{"at the start", berlin, []string{"Sat 00:00-06:00"}, at(t, berlin, "2026-11-28 00:00"), true},
		{"at the end is outside", berlin, []string{"Sat 00:00-06:00"}, at(t, berlin, "2026-11-28 06:00"), false},
		{"Friday night is not Saturday's window", berlin, []string{"Sat 00:00-06:00"}, at(t, berlin, "2026-11-27 23:59"), false},
		{"crossing midnight, before midnight", berlin, []string{"Fri 22:00-02:00"}, at(t, berlin, "2026-11-27 23:30"), true},
		{"crossing midnight, after midnight belongs to Friday", berlin, []string{"Fri 22:00-02:00"}, at(t, berlin, "2026-11-28 01:30"), true},
		{"crossing midnight, Saturday 22:30 is outside", berlin, []string{"Fri 22:00-02:00"}, at(t, berlin, "2026-11-28 22:30"), false},
		{"Sunday window crossing into Monday", "UTC", []string{"Sun 23:00-01:00"}, at(t, "UTC", "2026-11-30 00:30"), true},
		{"time zone matters: 00:30 UTC is 01:30 Berlin", berlin, []string{"Sat 01:00-02:00"}, time.Date(2026, 11, 28, 0, 30, 0, 0, time.UTC), true},
		{"end 24:00", "UTC", []string{"Sat 22:00-24:00"}, at(t, "UTC", "2026-11-28 23:59"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSchedule(t, tc.tz, tc.windows...)
			_, ok := s.Current(tc.now)
			assert.Equal(t, tc.inside, ok)
			assert.Equal(t, tc.inside, s.StillOpen(tc.now))
		})
	}
}

// DST: 2026-03-08 America/New_York skips 02:00-03:00; 2026-11-01 repeats 01:00-02:00.
// 2026-03-29 Europe/Berlin skips 02:00-03:00; 2026-10-25 repeats 02:00-03:00.
func TestWindowDST(t *testing.T) {
	ny, berlin := "America/New_York", "Europe/Berlin"
	cases := []struct {
		name       string
		tz         string
		window     string
		probe      time.Time // an instant inside the occurrence
		wantStart  time.Time
		wantLength time.Duration
	}{
		{"NY spring-forward: 01:00-04:00 lasts 2h", ny, "Sun 01:00-04:00",
			time.Date(2026, 3, 8, 6, 30, 0, 0, time.UTC), time.Date(2026, 3, 8, 6, 0, 0, 0, time.UTC), 2 * time.Hour},
		{"NY spring-forward: a start in the gap opens when the clock jumps", ny, "Sun 02:30-05:00",
			time.Date(2026, 3, 8, 7, 30, 0, 0, time.UTC), time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), 2 * time.Hour},
		{"NY fall-back: 01:00-04:00 lasts 4h", ny, "Sun 01:00-04:00",
			time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC), time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC), 4 * time.Hour},
		{"NY fall-back: a repeated start takes the first 01:30", ny, "Sun 01:30-03:00",
			time.Date(2026, 11, 1, 5, 45, 0, 0, time.UTC), time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC), 2*time.Hour + 30*time.Minute},
		{"Berlin spring-forward: 01:00-04:00 lasts 2h", berlin, "Sun 01:00-04:00",
			time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC), time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), 2 * time.Hour},
		{"Berlin spring-forward: an end in the gap closes when the clock jumps", berlin, "Sun 00:00-02:30",
			time.Date(2026, 3, 28, 23, 30, 0, 0, time.UTC), time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC), 2 * time.Hour},
		{"Berlin fall-back: 01:00-04:00 lasts 4h", berlin, "Sun 01:00-04:00",
			time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), time.Date(2026, 10, 24, 23, 0, 0, 0, time.UTC), 4 * time.Hour},
		{"Berlin fall-back: window crossing midnight into the long night", berlin, "Sat 22:00-04:00",
			time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 24, 20, 0, 0, 0, time.UTC), 7 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSchedule(t, tc.tz, tc.window)
			occ, ok := s.Current(tc.probe)
			require.True(t, ok, "probe inside the window")
			assert.Equal(t, tc.wantStart.UTC(), occ.Start.UTC())
			assert.Equal(t, tc.wantLength, occ.End.Sub(occ.Start))
		})
	}
}

func TestAdmit(t *testing.T) {
	s := mustSchedule(t, "UTC", "Sat 00:00-06:00", "Sun 00:00-02:00")
	sat := func(h, m int) time.Time { return time.Date(2026, 11, 28, h, m, 0, 0, time.UTC) }

	d := s.Admit(sat(1, 0), 2*time.Hour)
	assert.True(t, d.Allowed, "5h left, 2h needed")

	d = s.Admit(sat(5, 0), 2*time.Hour)
	assert.False(t, d.Allowed, "1h left, 2h needed")
	assert.Equal(t, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), d.NextStart, "Sunday's 2h window fits")
	assert.Contains(t, d.Reason, "only 1h0m0s left in window Sat 00:00-06:00")

	d = s.Admit(sat(5, 0), 3*time.Hour)
	assert.Equal(t, time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC), d.NextStart, "Sunday's window is too short: next Saturday")

	d = s.Admit(sat(12, 0), time.Hour)
	assert.False(t, d.Allowed)
	assert.Contains(t, d.Reason, "outside the maintenance windows")

	d = s.Admit(sat(1, 0), 7*time.Hour)
	assert.False(t, d.Allowed)
	assert.True(t, d.NextStart.IsZero())
	assert.Equal(t, "the plan needs about 7h0m0s, longer than any maintenance window", d.Reason)

	always := mustSchedule(t, "")
	assert.True(t, always.Admit(sat(12, 0), 100*time.Hour).Allowed)
}
