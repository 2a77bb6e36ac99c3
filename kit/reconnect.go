package kit

import (
	"time"

	"github.com/microchannels/channels/broker"
)

// DefaultReconnectBackoff paces the retries of a failing broker operation
// (a read, a reconnection): 100 ms doubling up to 5 s.
var DefaultReconnectBackoff broker.Backoff = broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}

// Reconnect paces the retries of a failing broker operation with a Backoff.
// The zero value uses DefaultReconnectBackoff. Not safe for concurrent use:
// one per loop.
type Reconnect struct {
	Backoff  broker.Backoff
	failures int
}

// Failed records a failure and waits the next delay, or until stop closes;
// it returns the delay and whether to go on.
func (r *Reconnect) Failed(stop <-chan struct{}) (time.Duration, bool) {
	b := r.Backoff
	if b == nil {
		b = DefaultReconnectBackoff
	}
	r.failures++
	d := b.Delay(r.failures)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return d, true
	case <-stop:
		return d, false
	}
}

// Next returns the delay the next failure will wait.
func (r *Reconnect) Next() time.Duration {
	b := r.Backoff
	if b == nil {
		b = DefaultReconnectBackoff
	}
	return b.Delay(r.failures + 1)
}

// Succeeded resets the backoff.
func (r *Reconnect) Succeeded() { r.failures = 0 }
