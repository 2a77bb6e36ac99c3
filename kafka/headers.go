package kafka

import (
	"fmt"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// HeaderNotBefore carries, on a retry copy, the time (Unix milliseconds)
// before which it must not run: the backoff of the failed run. It is
// internal to the adapter: handlers do not see it and dead letters do not
// carry it. A @moleculer/channels consumer ignores it (and runs the copy at
// once, as it runs its own retries).
const HeaderNotBefore = "x-retry-not-before"

func toKafkaHeaders(h map[string]string) []kafkago.Header {
	if len(h) == 0 {
		return nil
	}
	out := make([]kafkago.Header, 0, len(h))
	for k, v := range h {
		out = append(out, kafkago.Header{Key: k, Value: []byte(v)})
	}
	return out
}

// fromKafkaHeaders converts native headers, bounded by broker.MaxHeaders
// entries and broker.MaxHeadersSize bytes. A repeated key keeps its first
// value (as @moleculer/channels reads them).
func fromKafkaHeaders(hs []kafkago.Header) (map[string]string, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	if len(hs) > broker.MaxHeaders {
		return nil, fmt.Errorf("%w: %d headers (at most %d)", broker.ErrMalformed, len(hs), broker.MaxHeaders)
	}
	size := 0
	for _, h := range hs {
		size += len(h.Key) + len(h.Value)
	}
	if size > broker.MaxHeadersSize {
		return nil, fmt.Errorf("%w: headers of %d bytes (at most %d)", broker.ErrMalformed, size, broker.MaxHeadersSize)
	}
	out := make(map[string]string, len(hs))
	for _, h := range hs {
		if _, dup := out[h.Key]; !dup {
			out[h.Key] = string(h.Value)
		}
	}
	return out, nil
}

// failedRuns reads x-redelivered-count (failed runs so far); a value that
// is not a count is 0.
func failedRuns(h map[string]string) int {
	n, err := strconv.Atoi(h[broker.HeaderRedeliveredCount])
	if err != nil || n < 0 {
		return 0
	}
	return min(n, 1<<20)
}

func notBefore(h map[string]string) (time.Time, bool) {
	v, ok := h[HeaderNotBefore]
	if !ok {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
