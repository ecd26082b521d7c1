package v1alpha1

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestParseDuration(t *testing.T) {
	h, d := time.Hour, 24*time.Hour
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"24h", 24 * h},
		{"90m", 90 * time.Minute},
		{"300s", 300 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"250ms", 250 * time.Millisecond},
		{"0s", 0},
		{"0", 0}, // Go accepts a bare zero
		{"7d", 7 * d},
		{"1d12h", 36 * h},
		{"1d1h30m", 25*h + 30*time.Minute},
		{"1.5d", 36 * h},
		{"0.5d", 12 * h},
		{"0d", 0},
		{"180d", 180 * d},
		{"100000d", 100000 * d},
		{"106751d", 106751 * d}, // the most whole days a time.Duration holds
		{"106751d23h", 106751*d + 23*h},
		{"-7d", -7 * d},
		{"-1h", -h},
		{"-1d12h", -36 * h},
		{"+7d", 7 * d},
		{"+90m", 90 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseDurationErrors(t *testing.T) {
	unit := func(s string) string {
		return `invalid duration "` + s + `": use a number with a unit such as 90s, 30m, 24h or 7d`
	}
	cases := []struct{ in, want string }{
		{"", unit("")},
		{"7", unit("7")},
		{"d", unit("d")},
		{"abc", unit("abc")},
		{"1h-5m", unit("1h-5m")},
		{"7d-1h", unit("7d-1h")},
		{"7d+1h", unit("7d+1h")},
		{"--7d", unit("--7d")},
		{"-+7d", unit("-+7d")},
		{"-", unit("-")},
		{"7 d", unit("7 d")},
		{"7D", unit("7D")},
		{"1w", unit("1w")},
		{"1.d", unit("1.d")},
		{".5d", unit(".5d")},
		{"1d1d", unit("1d1d")},
		{"5 minutes", unit("5 minutes")},
		{" 7d", unit(" 7d")},
		{"106752d", `invalid duration "106752d": too many days`},
		{"1e9d", unit("1e9d")},
		{"106751d24h", `invalid duration "106751d24h": too long (more than 106751 days)`},
		// Days plus hours past the largest duration once wrapped around and came out
		// with the opposite sign.
		{"-100000d2562047h", `invalid duration "-100000d2562047h": too long (more than 106751 days)`},
		{"100000d2562047h", `invalid duration "100000d2562047h": too long (more than 106751 days)`},
		{"9999999999h", unit("9999999999h")},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			require.Error(t, err, "parsed as %v", got)
			assert.Equal(t, tc.want, err.Error())
			assert.Zero(t, got)
		})
	}
}

func TestDurationString(t *testing.T) {
	h, d := time.Hour, 24*time.Hour
	cases := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{time.Second, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{90 * time.Second, "1m30s"},
		{300 * time.Second, "5m"},
		{90 * time.Minute, "1h30m"},
		{h, "1h"},
		{h + time.Second, "1h0m1s"},
		{24 * h, "24h"}, // one day stays in hours: "24h" reads better than "1d"
		{36 * h, "36h"},
		{47 * h, "47h"},
		{2 * d, "2d"},
		{7 * d, "7d"},
		{180 * d, "180d"},
		{49 * h, "49h"},
		{7*d + time.Minute, "168h1m"},
		{-2 * d, "-2d"},
		{-90 * time.Minute, "-1h30m"},
		{100001 * d, "100001d"}, // once written but not read back
		{106751 * d, "106751d"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			s := Duration{tc.in}.String()
			assert.Equal(t, tc.want, s)
			back, err := ParseDuration(s)
			require.NoError(t, err)
			assert.Equal(t, tc.in, back, "String must parse back to the same duration")
		})
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Duration{36 * time.Hour})
	require.NoError(t, err)
	assert.JSONEq(t, `"36h"`, string(b))
	b, err = json.Marshal(Days(7))
	require.NoError(t, err)
	assert.JSONEq(t, `"7d"`, string(b))

	var got Duration
	require.NoError(t, json.Unmarshal([]byte(`"1d12h"`), &got))
	assert.Equal(t, 36*time.Hour, got.Duration)

	err = json.Unmarshal([]byte(`300`), &got)
	require.Error(t, err)
	assert.Equal(t, "expected a duration string such as 90s, 30m, 24h or 7d, got 300", err.Error())
	err = json.Unmarshal([]byte(`"5 minutes"`), &got)
	require.Error(t, err)
	assert.Equal(t, `invalid duration "5 minutes": use a number with a unit such as 90s, 30m, 24h or 7d`, err.Error())
}

func TestTimeJSON(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	// NewTime drops sub-second precision and writes UTC.
	at := NewTime(time.Date(2026, 12, 4, 10, 0, 0, 750_000_000, berlin))
	b, err := json.Marshal(at)
	require.NoError(t, err)
	assert.Equal(t, `"2026-12-04T09:00:00Z"`, string(b))

	var back Time
	require.NoError(t, json.Unmarshal(b, &back))
	assert.True(t, at.Equal(back.Time), "%v != %v", at, back)
	assert.Equal(t, at, back)

	// An offset is read as the same instant and written in UTC.
	require.NoError(t, json.Unmarshal([]byte(`"2026-12-04T10:00:00+01:00"`), &back))
	assert.True(t, at.Equal(back.Time))
	b, err = json.Marshal(back)
	require.NoError(t, err)
	assert.Equal(t, `"2026-12-04T09:00:00Z"`, string(b))

	// A fraction of a second is dropped when read, as NewTime drops it, so that the
	// value read is the value written back.
	require.NoError(t, json.Unmarshal([]byte(`"2026-12-04T09:00:00.999Z"`), &back))
	assert.Equal(t, at, back)

	// The years RFC 3339 holds, in UTC.
	require.NoError(t, json.Unmarshal([]byte(`"0000-01-01T00:00:00Z"`), &back))
	assert.Equal(t, 0, back.Year())
	require.NoError(t, json.Unmarshal([]byte(`"9999-12-31T23:59:59Z"`), &back))
	b, err = json.Marshal(back)
	require.NoError(t, err)
	assert.Equal(t, `"9999-12-31T23:59:59Z"`, string(b))

	// The zero time is written as null.
	b, err = json.Marshal(Time{})
	require.NoError(t, err)
	assert.Equal(t, "null", string(b))
}

func TestTimeJSONErrors(t *testing.T) {
	var tm Time
	cases := []struct{ in, want string }{
		{`"next week"`, `invalid time "next week": expected RFC 3339 such as 2026-12-04T00:00:00Z`},
		{`"2026-12-04"`, `invalid time "2026-12-04": expected RFC 3339 such as 2026-12-04T00:00:00Z`},
		{`"2026-12-04 09:00:00"`, `invalid time "2026-12-04 09:00:00": expected RFC 3339 such as 2026-12-04T00:00:00Z`},
		{`"2026-12-04T09:00:00"`, `invalid time "2026-12-04T09:00:00": expected RFC 3339 such as 2026-12-04T00:00:00Z`}, // no zone
		{`"2026-13-01T00:00:00Z"`, `invalid time "2026-13-01T00:00:00Z": expected RFC 3339 such as 2026-12-04T00:00:00Z`},
		// An offset that moves the time out of the years 0000-9999 in UTC, where
		// it is written, is refused.
		{`"9999-12-31T23:59:59-01:00"`, `invalid time "9999-12-31T23:59:59-01:00": out of range: the year in UTC must be 0000 to 9999`},
		{`"0000-01-01T00:00:00+01:00"`, `invalid time "0000-01-01T00:00:00+01:00": out of range: the year in UTC must be 0000 to 9999`},
		{`1764838800`, `expected an RFC 3339 time such as 2026-12-04T00:00:00Z, got 1764838800`},
		{`true`, `expected an RFC 3339 time such as 2026-12-04T00:00:00Z, got true`},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			err := json.Unmarshal([]byte(tc.in), &tm)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		})
	}
}

func TestIDSegment(t *testing.T) {
	cases := []struct{ in, want string }{
		{"general", "general"},
		{"General", "general"},
		{"gpu-a100", "gpu-a100"},
		{"General_Pool", "general-pool"},
		{"pool.v2", "pool-v2"},
		{"GPU Nodes (EU)", "gpu-nodes-eu"},
		{"a..__--b", "a-b"},
		{"--edge--", "edge"},
		{"größe", "gr-e"},
		{"___", ""},
		{"", ""},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			assert.Equal(t, tc.want, IDSegment(tc.in))
		})
	}
}

func TestPlanID(t *testing.T) {
	newYork, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	// 23:30 in New York on the 27th is already the 28th in UTC: the date is UTC's.
	at := time.Date(2026, 11, 27, 23, 30, 0, 0, newYork)
	id := PlanID("prod", "General_Pool", at, "3f9a1c")
	assert.Equal(t, "prod-general-pool-20261128-3f9a1c", id)
	// What PlanID builds is what plan validation accepts for that cluster and group.
	assert.Empty(t, validatePlanName(id, "prod", "General_Pool", field.NewPath("metadata", "name")))
	// and a plan of another group is told apart.
	assert.NotEmpty(t, validatePlanName(id, "prod", "gpu", field.NewPath("metadata", "name")))

	assert.Equal(t, "prod-general-20261127-3f9a1c",
		PlanID("prod", "general", time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC), "3f9a1c"))
}
