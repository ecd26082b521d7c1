package v1alpha1

import (
	"fmt"
	"strings"
	"time"
)

// Window is a weekly maintenance window such as "Sat 00:00-06:00". A window whose
// end is not after its start crosses midnight ("Fri 22:00-02:00" runs from Friday
// 22:00 to Saturday 02:00); its day is the day it starts.
type Window struct {
	Day   time.Weekday
	Start time.Duration // since midnight of Day
	End   time.Duration // since midnight of Day; may exceed 24h when crossing midnight
}

var weekdays = map[string]time.Weekday{
	"Mon": time.Monday, "Tue": time.Tuesday, "Wed": time.Wednesday, "Thu": time.Thursday,
	"Fri": time.Friday, "Sat": time.Saturday, "Sun": time.Sunday,
}

const windowForm = `"Sat 00:00-06:00" (a day Mon..Sun, then HH:MM-HH:MM in 24-hour time)`

// ParseWindow parses the seed's window form.
func ParseWindow(s string) (Window, error) {
	dayStr, span, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Window{}, fmt.Errorf("must look like %s", windowForm)
	}
	day, ok := weekdays[dayStr]
	if !ok {
		return Window{}, fmt.Errorf("unknown day %q: use one of Mon, Tue, Wed, Thu, Fri, Sat, Sun", dayStr)
	}
	from, to, ok := strings.Cut(strings.TrimSpace(span), "-")
	if !ok {
		return Window{}, fmt.Errorf("must look like %s", windowForm)
	}
	start, err := clock(from, false)
	if err != nil {
		return Window{}, err
	}
	end, err := clock(to, true)
	if err != nil {
		return Window{}, err
	}
	if start == end {
		return Window{}, fmt.Errorf("start and end are both %s: a window must have a length", from)
	}
	if end < start {
		end += 24 * time.Hour
	}
	return Window{Day: day, Start: start, End: end}, nil
}

// clock parses "HH:MM"; "24:00" is allowed only as an end.
func clock(s string, isEnd bool) (time.Duration, error) {
	var h, m int
	for i := range len(s) {
		if len(s) != 5 || (i == 2) != (s[i] == ':') || (i != 2 && (s[i] < '0' || s[i] > '9')) {
			return 0, fmt.Errorf("time %q must be HH:MM in 24-hour time", s)
		}
	}
	if len(s) != 5 {
		return 0, fmt.Errorf("time %q must be HH:MM in 24-hour time", s)
	}
	if _, err := fmt.Sscanf(s, "%2d:%2d", &h, &m); err != nil {
		return 0, fmt.Errorf("time %q must be HH:MM in 24-hour time", s)
	}
	if h == 24 && m == 0 && isEnd {
		return 24 * time.Hour, nil
	}
	if h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, fmt.Errorf("time %q is out of range: hours 00-23, minutes 00-59", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// String writes the window back in the seed's form.
func (w Window) String() string {
	end := w.End % (24 * time.Hour)
	if w.End == 24*time.Hour {
		end = w.End
	}
	return fmt.Sprintf("%s %s-%s", w.Day.String()[:3], hhmm(w.Start), hhmm(end))
}

func hhmm(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60)
}
