package vpsie

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// VPSie's answers mix types; every form seen decodes to the same value.
func TestFlexibleFieldsDecode(t *testing.T) {
	for _, in := range []string{
		`{"identifier": 42, "boxsize_id": "7", "cpu": "4", "ram": 8192, "ssd": 160.0, "created_on": "2026-11-27 10:00:00"}`,
		`{"identifier": "42", "boxsize_id": 7, "cpu": 4, "ram": "8192", "ssd": "160", "created_on": "2026-11-27T10:00:00Z"}`,
		`{"identifier": "42", "boxsize_id": 7, "cpu": 4, "ram": 8192, "ssd": 160, "created_on": 1795773600}`,
		`{"identifier": "42", "boxsize_id": 7, "cpu": 4, "ram": 8192, "ssd": 160, "created_on": 1795773600000}`,
	} {
		var v vmJSON
		require.NoError(t, json.Unmarshal([]byte(in), &v), in)
		vm := v.vm()
		assert.Equal(t, VM{Identifier: "42", BoxsizeID: "7", CPU: 4, RAMMB: 8192, SSDGB: 160,
			CreatedOn: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}, vm, in)
	}
	for in, want := range map[string]bool{`true`: true, `1`: true, `"1"`: true, `false`: false, `0`: false, `"0"`: false, `null`: false} {
		var b flexBool
		require.NoError(t, json.Unmarshal([]byte(in), &b), in)
		assert.Equal(t, want, bool(b), in)
	}
	var b flexBool
	assert.Error(t, json.Unmarshal([]byte(`"maybe"`), &b))
	var n flexInt
	assert.Error(t, json.Unmarshal([]byte(`"four"`), &n))
	var tm flexTime
	assert.Error(t, json.Unmarshal([]byte(`"yesterday"`), &tm))
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	assert.Equal(t, 7*time.Second, retryAfter("7", now))
	assert.Equal(t, 30*time.Second, retryAfter(now.Add(30*time.Second).Format(http.TimeFormat), now))
	assert.Zero(t, retryAfter("", now))
	assert.Zero(t, retryAfter("soon", now))
	assert.Zero(t, retryAfter(now.Add(-time.Minute).Format(http.TimeFormat), now))
}
