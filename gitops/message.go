package gitops

import (
	"strings"
)

// Trailer is one "Key: value" line at the end of a commit message.
type Trailer struct {
	Key   string
	Value string
}

// Trailer keys rebalancer writes on status commits.
const (
	TrailerPlan  = "Rebalancer-Plan"
	TrailerPhase = "Rebalancer-Phase"
	// TrailerArchived names, once per plan, the plans an archive commit took out
	// of the tree.
	TrailerArchived = "Rebalancer-Archived"
)

// SkipCI is the marker CI systems (GitHub Actions, GitLab CI, Jenkins' plugin, Azure
// Pipelines) honour to not build a commit; every status commit carries it.
const SkipCI = "[skip ci]"

// FormatMessage puts trailers in the last paragraph of a commit message, where
// `git interpret-trailers` and the forges look for them.
func FormatMessage(message string, trailers []Trailer) string {
	msg := strings.TrimRight(message, "\n") + "\n"
	if len(trailers) == 0 {
		return msg
	}
	var b strings.Builder
	b.WriteString(msg)
	b.WriteString("\n")
	for _, t := range trailers {
		b.WriteString(t.Key)
		b.WriteString(": ")
		b.WriteString(t.Value)
		b.WriteString("\n")
	}
	return b.String()
}

// ParseTrailers reads the "Key: value" lines of a message's last paragraph.
// Lines of that paragraph that are not trailers are ignored.
func ParseTrailers(message string) []Trailer {
	paras := strings.Split(strings.TrimRight(strings.ReplaceAll(message, "\r\n", "\n"), "\n"), "\n\n")
	if len(paras) < 2 {
		return nil
	}
	var out []Trailer
	for _, line := range strings.Split(paras[len(paras)-1], "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		out = append(out, Trailer{Key: k, Value: strings.TrimSpace(v)})
	}
	return out
}

// TrailerValue is the value of the last trailer named key (case-insensitive), or "".
func TrailerValue(trailers []Trailer, key string) string {
	v := ""
	for _, t := range trailers {
		if strings.EqualFold(t.Key, key) {
			v = t.Value
		}
	}
	return v
}
