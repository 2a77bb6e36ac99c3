// Package suggest finds, among known names, the one a mistyped name most
// likely meant ("kafak" -> "kafka"), for error messages.
package suggest

import "strings"

// Distance is the edit distance between a and b (optimal string
// alignment: insertions, deletions, substitutions and transpositions of
// adjacent bytes each count 1), counted in bytes: the names compared are
// ASCII identifiers and URL schemes.
func Distance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j]; three rows suffice.
	pprev := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], pprev[j-2]+1)
			}
		}
		pprev, prev, cur = prev, cur, pprev
	}
	return prev[len(b)]
}

// Close reports whether name is a likely misspelling of known: equal but
// for case, or within an edit distance of 2 (1 for names of up to 4 bytes,
// so that short names do not all look alike).
func Close(name, known string) bool {
	if name == known {
		return false
	}
	if strings.EqualFold(name, known) {
		return true
	}
	limit := 2
	if len(known) <= 4 {
		limit = 1
	}
	return Distance(strings.ToLower(name), strings.ToLower(known)) <= limit
}

// Closest returns the candidate closest to name among those Close to it
// (the first of equals, in the order given), or "" when none is.
func Closest(name string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		if !Close(name, c) {
			continue
		}
		if d := Distance(strings.ToLower(name), strings.ToLower(c)); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}
