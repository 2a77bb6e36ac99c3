package broker

import (
	"fmt"
	"strings"
)

// Limits are the sizes a broker refuses in one message. The kit checks a
// user's send against them before it reaches the broker (a clear
// *PublishError instead of a closed connection) and fits the headers of
// retry copies and dead letters into them (trimming the x-error-* headers
// the library wrote).
type Limits struct {
	// MaxHeaderBytes bounds the encoded headers of one message (AMQP: what
	// fits in one frame beside the content header's own fields). 0: no
	// bound of its own.
	MaxHeaderBytes int
	// MaxMessageBytes bounds payload and headers together (NATS:
	// max_payload; Kafka: max.message.bytes). 0: no bound.
	MaxMessageBytes int
}

// Limiter is the optional ability of a connected adapter to tell its
// broker's [Limits]; the plugin reads it after Connect and before each
// Subscribe (it sets Channel.Limits).
type Limiter interface {
	Limits() Limits
}

// HeaderEntryOverhead is the encoding cost counted per header beside its
// name and value: AMQP's table entry (name length, type, value length: 6
// bytes), NATS's "name: value\r\n" (4), a Kafka record header's two varints
// (at most 6).
const HeaderEntryOverhead = 8

// MessageOverhead is counted once per message beside its payload and
// headers (NATS's "NATS/1.0\r\n" and blank line, AMQP's and Kafka's fixed
// fields).
const MessageOverhead = 64

// HeaderBytes is the encoded size of h as [Limits] counts it.
func HeaderBytes(h map[string]string) int {
	n := 0
	for k, v := range h {
		n += len(k) + len(v) + HeaderEntryOverhead
	}
	return n
}

// Check reports whether a message of payload and headers fits; the error
// wraps ErrTooLarge and says which limit it crosses.
func (l Limits) Check(payload int, headers map[string]string) error {
	hb := HeaderBytes(headers)
	if l.MaxHeaderBytes > 0 && hb > l.MaxHeaderBytes {
		return fmt.Errorf("%w: headers of %d bytes, the broker takes %d at most", ErrTooLarge, hb, l.MaxHeaderBytes)
	}
	if l.MaxMessageBytes > 0 && payload+hb+MessageOverhead > l.MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes of payload and %d of headers, the broker takes %d in all",
			ErrTooLarge, payload, hb, l.MaxMessageBytes)
	}
	return nil
}

// HeaderErrorTrimmed marks a copy whose x-error-* headers were shortened
// or left out to fit the broker's limits; its value lists what was cut.
const HeaderErrorTrimmed = "x-error-trimmed"

// trimOrder is what Fit shortens, first to last: the stack and data, then
// the message (cut, never dropped below minErrorMessage bytes).
var trimOrder = []string{HeaderErrorStack, HeaderErrorData}

const minErrorMessage = 256

// Fit returns headers that fit l with a payload of the given size: h itself
// when it fits, else a copy whose x-error-stack and x-error-data are left
// out and whose x-error-message is cut, marked with x-error-trimmed. It
// reports false when even that does not fit (the payload or the other
// headers are too large): the broker will refuse the copy.
func (l Limits) Fit(payload int, h map[string]string) (map[string]string, bool) {
	return l.FitWith(payload, nil, h)
}

// FitWith is Fit for the headers h written beside base (a retry copy's
// failure beside the message's own headers): base is counted, never cut.
func (l Limits) FitWith(payload int, base, h map[string]string) (map[string]string, bool) {
	payload += HeaderBytes(base)
	if l.MaxHeaderBytes > 0 {
		l.MaxHeaderBytes -= HeaderBytes(base)
		if l.MaxHeaderBytes <= 0 {
			return h, false
		}
	}
	if l.Check(payload, h) == nil {
		return h, true
	}
	out := CloneHeaders(h, 1)
	var cut []string
	for _, k := range trimOrder {
		if _, ok := out[k]; ok {
			delete(out, k)
			cut = append(cut, k)
			out[HeaderErrorTrimmed] = strings.Join(cut, ",")
			if l.Check(payload, out) == nil {
				return out, true
			}
		}
	}
	if m, ok := out[HeaderErrorMessage]; ok && len(m) > minErrorMessage {
		cut = append(cut, HeaderErrorMessage)
		out[HeaderErrorTrimmed] = strings.Join(cut, ",")
		keep := len(m) - l.over(payload, out) - len("…")
		if keep < minErrorMessage {
			keep = minErrorMessage
		}
		out[HeaderErrorMessage] = cutEscaped(m, keep) + "…"
	}
	return out, l.Check(payload, out) == nil
}

// over is how many bytes h is over l with the payload (0 when it fits).
func (l Limits) over(payload int, h map[string]string) int {
	hb, over := HeaderBytes(h), 0
	if l.MaxHeaderBytes > 0 && hb > l.MaxHeaderBytes {
		over = hb - l.MaxHeaderBytes
	}
	if l.MaxMessageBytes > 0 {
		if o := payload + hb + MessageOverhead - l.MaxMessageBytes; o > over {
			over = o
		}
	}
	return over
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if n >= len(s) {
		return s
	}
	if n < 0 {
		n = 0
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// EscapeLineBreaks writes CR, LF, tab and the other ASCII control
// characters of a header value as \r, \n, \t and \xNN, so the value is
// one line on every broker: NATS refuses line breaks in header values, and
// readers of the other brokers see the same text. Everything else,
// backslashes included, is kept as is. The x-error-message, -name, -code
// and -type of retry copies and dead letters are escaped this way on every
// adapter; a value without control characters is returned as is.
func EscapeLineBreaks(v string) string {
	clean := true
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 8)
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// cutEscaped cuts an escaped value to at most n bytes without splitting a
// rune or an escape sequence (\r, \n, \t, \xNN).
func cutEscaped(s string, n int) string {
	s = truncateUTF8(s, n)
	if i := strings.LastIndexByte(s, '\\'); i >= 0 && len(s)-i < 4 {
		rest := s[i:]
		if len(rest) < 2 || (rest[1] == 'x' && len(rest) < 4) {
			s = s[:i]
		}
	}
	return s
}

// MinimalHeaders are the library's own headers of a copy (the original
// channel, group and id, the redelivery count and the error's name, code,
// time and a short message), for a copy the broker refused in full.
func MinimalHeaders(h map[string]string) map[string]string {
	min := make(map[string]string, 10)
	for _, k := range []string{HeaderOriginalChannel, HeaderOriginalGroup, HeaderOriginalID, HeaderRedeliveredCount,
		HeaderErrorName, HeaderErrorCode, HeaderErrorTimestamp, HeaderErrorRetryable} {
		if v, ok := h[k]; ok {
			min[k] = cutEscaped(v, minErrorMessage)
		}
	}
	min[HeaderErrorMessage] = cutEscaped(h[HeaderErrorMessage], minErrorMessage) // escaped already
	min[HeaderErrorTrimmed] = "headers"
	return min
}

// ShortEscaped is v escaped by [EscapeLineBreaks] and cut to the short
// length of the minimal headers (MinimalHeaders), without splitting a rune
// or an escape.
func ShortEscaped(v string) string { return cutEscaped(EscapeLineBreaks(v), minErrorMessage) }
