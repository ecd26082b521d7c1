package vpsie

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// VPSie's answers are not consistent about types: flags come as true or 1 or "1",
// identifiers as numbers or strings, times as dates or Unix seconds. These types
// read every form seen, so a change of form is not an outage.

// flexBool reads true/false, 0/1 and their strings.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(bytes.TrimSpace(data)), `"`)
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		*b = true
	case "false", "0", "", "null", "no":
		*b = false
	default:
		return fmt.Errorf("not a flag: %s", data)
	}
	return nil
}

// flexNumber parses a JSON number or numeric string; empty and null are 0.
func flexNumber(data []byte) (float64, error) {
	s := strings.Trim(string(bytes.TrimSpace(data)), `"`)
	if s == "" || s == "null" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("not a number: %s", data)
	}
	return f, nil
}

// flexInt reads a number or a numeric string.
type flexInt int64

func (n *flexInt) UnmarshalJSON(data []byte) error {
	f, err := flexNumber(data)
	*n = flexInt(f)
	return err
}

// flexFloat reads a number or a numeric string.
type flexFloat float64

func (n *flexFloat) UnmarshalJSON(data []byte) error {
	f, err := flexNumber(data)
	*n = flexFloat(f)
	return err
}

// flexID reads an identifier given as a string or a number.
type flexID string

func (id *flexID) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		*id = ""
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*id = flexID(s)
		return nil
	}
	var num json.Number
	if err := json.Unmarshal(data, &num); err != nil {
		return fmt.Errorf("not an identifier: %s", data)
	}
	*id = flexID(num.String())
	return nil
}

// flexTime reads RFC 3339, "2006-01-02 15:04:05" (UTC), or Unix seconds or
// milliseconds.
type flexTime struct{ time.Time }

func (t *flexTime) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" || string(data) == `""` {
		t.Time = time.Time{}
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
			if v, err := time.Parse(layout, s); err == nil {
				t.Time = v
				return nil
			}
		}
		data = []byte(s)
	}
	n, err := strconv.ParseFloat(string(data), 64)
	if err != nil {
		return fmt.Errorf("not a time: %s", data)
	}
	if n > 1e12 {
		t.Time = time.UnixMilli(int64(n)).UTC()
	} else {
		t.Time = time.Unix(int64(n), 0).UTC()
	}
	return nil
}
