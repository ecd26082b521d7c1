package policies

import (
	"fmt"
	"sort"
	"time"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
)

// Schedule is a policy's maintenance windows in its time zone. Windows are weekly and
// expressed in wall-clock time, so on the days daylight saving time changes they are
// shorter or longer in real time:
//
//   - a wall-clock time that does not exist (the hour skipped in spring) resolves to
//     the moment the clock jumps, the first instant whose wall clock has passed it;
//   - a wall-clock time that happens twice (the hour repeated in autumn) resolves to
//     its first occurrence.
//
// So "Sun 01:00-04:00" in America/New_York lasts 2 real hours on the spring-forward
// Sunday and 4 on the fall-back Sunday.
type Schedule struct {
	windows []api.Window
	loc     *time.Location
}

// NewSchedule parses windows (validated already by api) in the named IANA zone.
// No windows means "any time".
func NewSchedule(windows []string, timeZone string) (*Schedule, error) {
	loc := time.UTC
	if timeZone != "" {
		l, err := time.LoadLocation(timeZone)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", timeZone, err)
		}
		loc = l
	}
	s := &Schedule{loc: loc}
	for _, w := range windows {
		pw, err := api.ParseWindow(w)
		if err != nil {
			return nil, fmt.Errorf("maintenance window %q: %w", w, err)
		}
		s.windows = append(s.windows, pw)
	}
	return s, nil
}

// ScheduleFor returns a policy's schedule.
func ScheduleFor(p *api.RebalancePolicy) (*Schedule, error) {
	return NewSchedule(p.Spec.MaintenanceWindows, p.Spec.TimeZone)
}

// Always reports whether the schedule has no windows, so any time will do.
func (s *Schedule) Always() bool { return len(s.windows) == 0 }

// Occurrence is one concrete opening of a window.
type Occurrence struct {
	Window     api.Window
	Start, End time.Time
}

// occurrences lists the openings whose start date lies in [from-2d, to+1d], sorted.
func (s *Schedule) occurrences(from, to time.Time) []Occurrence {
	var out []Occurrence
	first := from.In(s.loc).AddDate(0, 0, -2)
	last := to.In(s.loc).AddDate(0, 0, 1)
	for d := time.Date(first.Year(), first.Month(), first.Day(), 12, 0, 0, 0, s.loc); !d.After(last); d = d.AddDate(0, 0, 1) {
		for _, w := range s.windows {
			if d.Weekday() != w.Day {
				continue
			}
			start := resolveWall(s.loc, d.Year(), d.Month(), d.Day(), w.Start)
			end := resolveWall(s.loc, d.Year(), d.Month(), d.Day(), w.End)
			if end.After(start) {
				out = append(out, Occurrence{Window: w, Start: start, End: end})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Current returns the opening that contains now, if any (the one that ends last
// when windows overlap).
func (s *Schedule) Current(now time.Time) (Occurrence, bool) {
	var best Occurrence
	found := false
	for _, o := range s.occurrences(now, now) {
		if !now.Before(o.Start) && now.Before(o.End) && (!found || o.End.After(best.End)) {
			best, found = o, true
		}
	}
	return best, found
}

// Next returns the first opening that starts after now and is at least minLength
// long in real time, looking up to five weeks ahead.
func (s *Schedule) Next(now time.Time, minLength time.Duration) (Occurrence, bool) {
	for _, o := range s.occurrences(now, now.AddDate(0, 0, 35)) {
		if o.Start.After(now) && o.End.Sub(o.Start) >= minLength {
			return o, true
		}
	}
	return Occurrence{}, false
}

// WindowDecision says whether work of an estimated duration may start now.
type WindowDecision struct {
	// Allowed: start now.
	Allowed bool
	// NextStart is when to try again, when not allowed and a fitting window exists.
	NextStart time.Time
	// Reason explains a refusal for a person.
	Reason string
}

// Admit decides whether work estimated to take duration may start at now: it must
// fit in the rest of the current opening. With no windows it always may.
func (s *Schedule) Admit(now time.Time, duration time.Duration) WindowDecision {
	if s.Always() {
		return WindowDecision{Allowed: true}
	}
	if cur, ok := s.Current(now); ok {
		left := cur.End.Sub(now)
		if left >= duration {
			return WindowDecision{Allowed: true}
		}
		if next, ok := s.Next(now, duration); ok {
			return WindowDecision{NextStart: next.Start, Reason: fmt.Sprintf(
				"only %s left in window %s but the plan needs about %s; next fitting window opens %s",
				roundDur(left), cur.Window, roundDur(duration), next.Start.In(s.loc).Format("Mon 2006-01-02 15:04 MST"))}
		}
	}
	if next, ok := s.Next(now, duration); ok {
		return WindowDecision{NextStart: next.Start, Reason: fmt.Sprintf(
			"outside the maintenance windows; next fitting window opens %s", next.Start.In(s.loc).Format("Mon 2006-01-02 15:04 MST"))}
	}
	return WindowDecision{Reason: fmt.Sprintf("the plan needs about %s, longer than any maintenance window", roundDur(duration))}
}

// StillOpen reports whether a running plan may begin another batch now (rolling
// plans pause between batches when their window has closed).
func (s *Schedule) StillOpen(now time.Time) bool {
	if s.Always() {
		return true
	}
	_, ok := s.Current(now)
	return ok
}

func roundDur(d time.Duration) time.Duration { return d.Round(time.Minute) }

// resolveWall returns the instant at wall-clock offset (since midnight; may exceed
// 24h for windows crossing midnight) on the given date in loc, resolving skipped
// and repeated wall-clock times as Schedule documents.
func resolveWall(loc *time.Location, y int, m time.Month, d int, offset time.Duration) time.Time {
	// The wall clock wanted, as a naive time (UTC used only as a neutral zone).
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Add(offset)
	var candidates []time.Time
	for _, probe := range []time.Duration{-26 * time.Hour, 0, 26 * time.Hour} {
		_, off := want.Add(probe).In(loc).Zone()
		t := want.Add(-time.Duration(off) * time.Second)
		if naive(t.In(loc)).Equal(want) {
			candidates = append(candidates, t)
		}
	}
	if len(candidates) > 0 {
		sort.Slice(candidates, func(i, j int) bool { return candidates[i].Before(candidates[j]) })
		return candidates[0] // the first occurrence of a repeated time
	}
	// Skipped: find the first instant whose wall clock is at or past want. Around a
	// gap the wall clock only moves forward, so bisect between offsets.
	lo := want.Add(-26 * time.Hour)
	hi := want.Add(26 * time.Hour)
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if naive(mid.In(loc)).Before(want) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi.Truncate(time.Second)
}

func naive(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}
