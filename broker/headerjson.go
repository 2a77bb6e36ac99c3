package broker

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// The plain JSON headers codec: the common case of the JSON headers field,
// an object of string values none of which needs an escape, read and
// written without reflection. Whatever falls outside it (an escape, a value
// that is not a string, a malformed input) goes to encoding/json, so the
// results are those of encoding/json on every input: the fast path of
// DecodeHeaders is checked against its general path by FuzzDecodeHeadersJSON,
// and the encoding against json.Marshal byte for byte by
// FuzzEncodeHeadersJSON. BenchmarkHeaders compares both paths.

// plainHeadersMax is the largest number of headers the plain encoder sorts
// on the stack; more go to encoding/json.
const plainHeadersMax = 32

// encodePlainJSON returns h as encoding/json writes it (keys sorted, no
// spaces), when every key and value is printable ASCII that encoding/json
// writes as is (no '"', '\\', '<', '>' or '&'); ok is false otherwise.
func encodePlainJSON(h map[string]string) (b []byte, ok bool) {
	if len(h) > plainHeadersMax {
		return nil, false
	}
	var buf [plainHeadersMax]string
	keys := buf[:0]
	size := 2
	for k, v := range h {
		if !plainASCII(k) || !plainASCII(v) {
			return nil, false
		}
		keys = append(keys, k)
		size += len(k) + len(v) + 6
	}
	slices.Sort(keys)
	b = make([]byte, 0, size)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':', '"')
		b = append(b, h[k]...)
		b = append(b, '"')
	}
	return append(b, '}'), true
}

// plainASCII reports whether encoding/json writes s between quotes as is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// decodePlainJSON decodes a JSON object whose values are all strings
// without escapes (valid UTF-8, no control character): the keys and values
// are substrings of s. ok is false for anything else, which encoding/json
// then decodes (or refuses): an escape, another kind of value (null
// included), a nested value, a malformed input, more than MaxHeaders
// entries.
func decodePlainJSON(s string) (h map[string]string, ok bool) {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return nil, false
	}
	n := strings.Count(s, `"`) / 4
	if n > MaxHeaders {
		return nil, false
	}
	h = make(map[string]string, n)
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return h, skipSpace(s, i+1) == len(s)
	}
	for {
		var k, v string
		if k, i, ok = plainString(s, i); !ok {
			return nil, false
		}
		if i = skipSpace(s, i); i >= len(s) || s[i] != ':' {
			return nil, false
		}
		if v, i, ok = plainString(s, skipSpace(s, i+1)); !ok {
			return nil, false
		}
		h[k] = v
		if i = skipSpace(s, i); i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return h, skipSpace(s, i+1) == len(s)
		default:
			return nil, false
		}
	}
}

// plainString reads the string starting at s[i] (a '"'), which must have no
// escape and no control character, and be valid UTF-8. It returns the string
// and the index after its closing quote.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", i, false
	}
	start := i + 1
	ascii := true
	for j := start; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			v := s[start:j]
			if !ascii && !utf8.ValidString(v) {
				return "", j, false
			}
			return v, j + 1, true
		case c == '\\' || c < 0x20:
			return "", j, false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", len(s), false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}
