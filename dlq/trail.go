package dlq

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/microchannels/channels/broker"
)

// Trail is one record of HeaderReplayedFrom: a replay of a dead letter.
type Trail struct {
	// Queue and ID are the dead letter's queue and ID.
	Queue string `json:"q"`
	ID    string `json:"id"`
	// Error is "name: message" of its failure, short (cut to 256 bytes).
	Error string `json:"err,omitempty"`
	// At is when it was replayed (RFC 3339, UTC, seconds).
	At string `json:"at"`
}

// MaxTrail is the largest HeaderReplayedFrom Replay writes, in bytes: the
// oldest records are left out to stay under it (the newest is always kept).
const MaxTrail = 2048

// ParseTrail reads a HeaderReplayedFrom value; a value that is not a trail
// gives nil.
func ParseTrail(v string) []Trail {
	if v == "" || len(v) > broker.MaxHeadersSize {
		return nil
	}
	var t []Trail
	if json.Unmarshal([]byte(v), &t) != nil {
		return nil
	}
	return t
}

// ReplayHeaders are the headers Replay sends e with (see Replay), fitted
// to limits: when they do not fit, the older trail records are left out,
// then the error of the newest one.
func ReplayHeaders(queue string, e Entry, now time.Time, limits broker.Limits) map[string]string {
	h := make(map[string]string, len(e.Headers)+1)
	for k, v := range e.Headers {
		if isFailureHeader(k) || isInternalHeader(k) {
			continue
		}
		h[k] = v
	}
	// A header the consumer could not decode was kept under
	// x-original-<name> (broker.DeadLetterHeaders): it goes back under its
	// name, so that the replayed message is the one that failed (it fails
	// again if the cause is not fixed, rather than running without it).
	for k, v := range e.Headers {
		name, ok := strings.CutPrefix(k, "x-original-")
		if !ok || name == "" || strings.HasPrefix(name, "x-") || name == "channel" || name == "group" || name == "id" {
			continue
		}
		if _, taken := h[name]; !taken {
			h[name] = v
		}
	}
	delete(h, HeaderReplayedFrom)
	rec := Trail{Queue: queue, ID: e.ID, At: now.UTC().Format(time.RFC3339)}
	if e.ErrorName != "" || e.ErrorMessage != "" {
		rec.Error = broker.ShortEscaped(strings.TrimPrefix(e.ErrorName+": "+e.ErrorMessage, ": "))
	}
	trail := append(ParseTrail(e.Headers[HeaderReplayedFrom]), rec)
	for {
		b, _ := json.Marshal(trail)
		h[HeaderReplayedFrom] = string(b)
		if len(trail) == 1 || (len(b) <= MaxTrail && limits.Check(len(e.Payload), h) == nil) {
			break
		}
		trail = trail[1:]
	}
	if limits.Check(len(e.Payload), h) != nil && rec.Error != "" {
		rec.Error = ""
		b, _ := json.Marshal([]Trail{rec})
		h[HeaderReplayedFrom] = string(b)
	}
	return h
}

// movedHeaders are the headers Move sends a dead letter with.
func movedHeaders(src map[string]string) map[string]string {
	h := make(map[string]string, len(src))
	for k, v := range src {
		if !isInternalHeader(k) {
			h[k] = v
		}
	}
	return h
}

// isFailureHeader tells the headers of a dead letter's failure.
func isFailureHeader(k string) bool {
	return strings.HasPrefix(k, broker.HeaderErrorPrefix) || strings.HasPrefix(k, "x-original-") ||
		k == broker.HeaderRedeliveredCount
}

// keyOf is the message key a copy of e is sent with: its record key where
// the broker stores one (Kafka), else the portable key it was sent with
// (broker.HeaderKey); "" for none.
func keyOf(e *Entry) string {
	if len(e.Key) > 0 {
		return string(e.Key)
	}
	return e.Headers[broker.HeaderKey]
}

// isInternalHeader tells the headers adapters and brokers keep for
// themselves: x-group, x-channels-* (but the portable key, HeaderKey), Kafka's x-retry-not-before (a retry's
// delay) and what RabbitMQ adds when it dead-letters a message (x-death,
// x-first-death-*, x-last-death-*).
func isInternalHeader(k string) bool {
	return k == broker.HeaderGroup || (strings.HasPrefix(k, "x-channels-") && k != broker.HeaderKey) || k == "x-retry-not-before" ||
		k == "x-death" || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-")
}
