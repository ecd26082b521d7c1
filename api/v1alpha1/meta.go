package v1alpha1

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TypeMeta names the kind of an object.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta is the part of Kubernetes' metadata that makes sense for a file in git:
// a name and free-form labels and annotations. Server-side fields (uid,
// resourceVersion, managedFields...) are deliberately unknown fields here.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Duration is a time.Duration written as Go writes durations ("90m", "1h30m",
// "300s") or with a leading number of days ("7d", "1d12h").
type Duration struct {
	time.Duration
}

// Days is a convenience for defaults.
func Days(n int) Duration { return Duration{time.Duration(n) * 24 * time.Hour} }

var daysPrefix = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)d`)

// maxDays is the most days a time.Duration holds (about 292 years): Duration.String
// writes any whole number of days up to it as "Nd", so ParseDuration must read them.
const maxDays = math.MaxInt64 / int64(24*time.Hour)

// ParseDuration parses Go's duration syntax extended with a leading `d` for days.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	sign := time.Duration(1)
	if strings.HasPrefix(s, "-") {
		sign, s = -1, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	var total time.Duration
	if m := daysPrefix.FindStringSubmatch(s); m != nil {
		days, err := strconv.ParseFloat(m[1], 64)
		if err != nil || days > float64(maxDays) {
			return 0, fmt.Errorf("invalid duration %q: too many days", orig)
		}
		total = time.Duration(days * float64(24*time.Hour))
		s = s[len(m[0]):]
	}
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
			return 0, fmt.Errorf("invalid duration %q: use a number with a unit such as 90s, 30m, 24h or 7d", orig)
		}
		// Days plus the rest must still fit: wrapped around, "-100000d2562047h"
		// came out positive.
		if d > math.MaxInt64-total {
			return 0, fmt.Errorf("invalid duration %q: too long (more than %d days)", orig, maxDays)
		}
		total += d
	} else if total == 0 && !strings.HasSuffix(orig, "d") {
		return 0, fmt.Errorf("invalid duration %q: use a number with a unit such as 90s, 30m, 24h or 7d", orig)
	}
	return sign * total, nil
}

// String writes whole numbers of days from two days up as "Nd" and everything else without Go's trailing zero
// units ("1h30m", not "1h30m0s").
func (d Duration) String() string {
	v := d.Duration
	if (v >= 48*time.Hour || v <= -48*time.Hour) && v%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a duration string such as 90s, 30m, 24h or 7d, got %s", b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Time is a point in time written in RFC 3339 ("2026-12-04T00:00:00Z").
type Time struct {
	time.Time
}

// NewTime wraps t, dropping sub-second precision as the files do.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Second)} }

// MarshalJSON writes RFC 3339 in UTC, or null for the zero time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

// UnmarshalJSON reads RFC 3339.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected an RFC 3339 time such as 2026-12-04T00:00:00Z, got %s", b)
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("invalid time %q: expected RFC 3339 such as 2026-12-04T00:00:00Z", s)
	}
	// MarshalJSON writes the year in UTC with four digits: an offset that moves
	// "0000-01-01T00:00:00+01:00" or "9999-12-31T23:00:00-01:00" into year -1 or
	// 10000 would be written as a time that cannot be read back.
	if y := v.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("invalid time %q: out of range: the year in UTC must be 0000 to 9999", s)
	}
	// Keep what MarshalJSON writes: UTC, whole seconds. With the fraction kept, a
	// notAfter half a second after createdAt passed validation when read and failed
	// once written back.
	*t = NewTime(v)
	return nil
}
