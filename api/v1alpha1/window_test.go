package v1alpha1

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseWindow(t *testing.T) {
	h := time.Hour
	cases := []struct {
		in   string
		want Window
	}{
		{"Sat 00:00-06:00", Window{Day: time.Saturday, Start: 0, End: 6 * h}},
		{"Mon 09:30-17:45", Window{Day: time.Monday, Start: 9*h + 30*time.Minute, End: 17*h + 45*time.Minute}},
		// Crossing midnight: the window belongs to the day it starts and ends after 24h.
		{"Fri 22:00-02:00", Window{Day: time.Friday, Start: 22 * h, End: 26 * h}},
		{"Sat 22:00-00:00", Window{Day: time.Saturday, Start: 22 * h, End: 24 * h}},
		{"Sun 23:59-23:58", Window{Day: time.Sunday, Start: 23*h + 59*time.Minute, End: 47*h + 58*time.Minute}},
		// 24:00 is allowed as an end.
		{"Sun 22:00-24:00", Window{Day: time.Sunday, Start: 22 * h, End: 24 * h}},
		{"Wed 00:00-24:00", Window{Day: time.Wednesday, Start: 0, End: 24 * h}},
		{"Tue 00:00-00:01", Window{Day: time.Tuesday, Start: 0, End: time.Minute}},
		{"Thu 12:00-11:59", Window{Day: time.Thursday, Start: 12 * h, End: 35*h + 59*time.Minute}},
		// Surrounding and doubled spaces are forgiven.
		{"  Sat 00:00-06:00 ", Window{Day: time.Saturday, Start: 0, End: 6 * h}},
		{"Sat  00:00-06:00", Window{Day: time.Saturday, Start: 0, End: 6 * h}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseWindow(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Greater(t, got.End, got.Start)
			assert.LessOrEqual(t, got.End-got.Start, 24*h)
		})
	}
}

func TestParseWindowErrors(t *testing.T) {
	const form = `must look like "Sat 00:00-06:00" (a day Mon..Sun, then HH:MM-HH:MM in 24-hour time)`
	cases := []struct{ in, want string }{
		{"", form},
		{"Sat", form},
		{"Sat00:00-06:00", form},
		{"Sat 00:00", form},
		{"Sat 00:00–06:00", form}, // an en dash is not a dash
		{"Sunday 00:00-06:00", `unknown day "Sunday": use one of Mon, Tue, Wed, Thu, Fri, Sat, Sun`},
		{"sat 00:00-06:00", `unknown day "sat": use one of Mon, Tue, Wed, Thu, Fri, Sat, Sun`},
		{"Sa 00:00-06:00", `unknown day "Sa": use one of Mon, Tue, Wed, Thu, Fri, Sat, Sun`},
		{"Sat 1am-6am", `time "1am" must be HH:MM in 24-hour time`},
		{"Sat 0:00-6:00", `time "0:00" must be HH:MM in 24-hour time`},
		{"Sat 00:00-6:00", `time "6:00" must be HH:MM in 24-hour time`},
		{"Sat 00.00-06:00", `time "00.00" must be HH:MM in 24-hour time`},
		{"Sat 00:00-06:00:00", `time "06:00:00" must be HH:MM in 24-hour time`},
		{"Sat 00:00 - 06:00", `time "00:00 " must be HH:MM in 24-hour time`},
		{"Sat -06:00", `time "" must be HH:MM in 24-hour time`},
		{"Sat +1:00-06:00", `time "+1:00" must be HH:MM in 24-hour time`},
		{"Sat 00:00-25:00", `time "25:00" is out of range: hours 00-23, minutes 00-59`},
		{"Sat 00:60-06:00", `time "00:60" is out of range: hours 00-23, minutes 00-59`},
		{"Sat 24:00-06:00", `time "24:00" is out of range: hours 00-23, minutes 00-59`}, // 24:00 only as an end
		{"Sat 00:00-24:01", `time "24:01" is out of range: hours 00-23, minutes 00-59`},
		{"Sat 03:00-03:00", "start and end are both 03:00: a window must have a length"},
		{"Sat 00:00-00:00", "start and end are both 00:00: a window must have a length"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			w, err := ParseWindow(tc.in)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
			assert.Equal(t, Window{}, w)
		})
	}
}

func TestWindowString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Sat 00:00-06:00", "Sat 00:00-06:00"},
		{"Fri 22:00-02:00", "Fri 22:00-02:00"},
		{"Sun 22:00-24:00", "Sun 22:00-24:00"},
		{"Wed 00:00-24:00", "Wed 00:00-24:00"},
		{"Mon 09:30-17:45", "Mon 09:30-17:45"},
		{"Thu 23:59-00:01", "Thu 23:59-00:01"},
		// An end of 00:00 and one of 24:00 are the same window; 24:00 is how it is written back.
		{"Sat 22:00-00:00", "Sat 22:00-24:00"},
		{" Tue  01:00-02:00 ", "Tue 01:00-02:00"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			w, err := ParseWindow(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, w.String())
			// Round trip: what String writes parses back to the same window.
			back, err := ParseWindow(w.String())
			require.NoError(t, err)
			assert.Equal(t, w, back)
		})
	}
}

// TestWindowStringEveryDay makes sure every weekday is written the way ParseWindow reads it.
func TestWindowStringEveryDay(t *testing.T) {
	for d := time.Sunday; d <= time.Saturday; d++ {
		w := Window{Day: d, Start: time.Hour, End: 2 * time.Hour}
		back, err := ParseWindow(w.String())
		require.NoError(t, err, w.String())
		assert.Equal(t, w, back)
	}
}
