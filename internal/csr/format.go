package csr

import (
	"strconv"
	"strings"
)

const (
	// maxQuotedValueBytes cuts each listed value: SANs and subjects come from the
	// requester and may be long.
	maxQuotedValueBytes = 64
	// maxQuotedValues is how many offending values a violation lists before "and N more".
	maxQuotedValues = 3
)

// QuoteValues formats requester-controlled values for a violation message: each is
// Go-quoted (so newlines or quotes cannot forge the message's structure), cut to 64
// bytes, and at most three are listed, then "and N more". Never pass key material.
func QuoteValues(vals []string) string {
	var b strings.Builder
	for i, v := range vals {
		if i == maxQuotedValues {
			b.WriteString(" and ")
			b.WriteString(strconv.Itoa(len(vals) - i))
			b.WriteString(" more")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if len(v) > maxQuotedValueBytes {
			v = v[:maxQuotedValueBytes-3] + "..."
		}
		b.WriteString(strconv.Quote(v))
	}
	return b.String()
}

// ValueList gathers the offending values of one rule so that a CSR with many bad SANs
// yields one violation, not one per SAN. It keeps only the values it will print, so
// it allocates nothing until a value is added and little after. The zero value is ready.
type ValueList struct {
	vals []string
	n    int
}

// Add records v.
func (l *ValueList) Add(v string) {
	if l.n < maxQuotedValues {
		l.vals = append(l.vals, v)
	}
	l.n++
}

// Len is how many values were recorded.
func (l *ValueList) Len() int { return l.n }

// Violation returns rule + " (got <values>)", or "" when nothing was recorded.
func (l *ValueList) Violation(rule string) string {
	if l.n == 0 {
		return ""
	}
	s := rule + " (got " + QuoteValues(l.vals)
	if l.n > len(l.vals) {
		s += " and " + strconv.Itoa(l.n-len(l.vals)) + " more"
	}
	return s + ")"
}
