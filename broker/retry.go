package broker

import (
	"fmt"
	"math"
	"time"
)

// Defaults shared by every adapter.
const (
	// DefaultMaxInFlight is the default bound on concurrently running handlers per channel.
	DefaultMaxInFlight = 1
	// DefaultMaxRetries is the default number of redeliveries after the first attempt.
	DefaultMaxRetries = 3
	// DefaultDeadLetterQueue is the default dead-letter queue (before prefixing).
	DefaultDeadLetterQueue = "FAILED_MESSAGES"
	// DefaultDeadLetterExchange is the default AMQP dead-letter exchange (before prefixing).
	DefaultDeadLetterExchange = "DEAD_LETTER"
	// DefaultBackoffInitial is the delay before the first retry.
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax caps the retry delay.
	DefaultBackoffMax = 30 * time.Second
	// DefaultBackoffMultiplier grows the delay between attempts.
	DefaultBackoffMultiplier = 2.0
)

// Backoff gives the delay before redelivering a message whose attempt
// number failed (attempt is 1 after the first failure).
type Backoff interface {
	Delay(attempt int) time.Duration
}

// BackoffFunc adapts a function to Backoff.
type BackoffFunc func(attempt int) time.Duration

// Delay calls f.
func (f BackoffFunc) Delay(attempt int) time.Duration { return f(attempt) }

// ConstantBackoff waits the same delay before every retry.
type ConstantBackoff time.Duration

// Delay returns the constant.
func (c ConstantBackoff) Delay(int) time.Duration { return time.Duration(c) }

// ExponentialBackoff waits Initial, then Initial*Multiplier, ... capped at Max.
type ExponentialBackoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
}

// DefaultBackoff is 100ms doubling up to 30s.
var DefaultBackoff Backoff = ExponentialBackoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax, Multiplier: DefaultBackoffMultiplier}

// Delay returns the delay after the given failed attempt.
func (b ExponentialBackoff) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	m := b.Multiplier
	if m < 1 {
		m = 1
	}
	d := float64(b.Initial) * math.Pow(m, float64(attempt-1))
	if b.Max > 0 && d > float64(b.Max) {
		return b.Max
	}
	return time.Duration(d)
}

// RetryPolicy is a channel's resolved retry policy.
type RetryPolicy struct {
	// MaxRetries is the number of redeliveries after the first attempt (>= 0).
	MaxRetries int
	// Backoff gives the delay before each redelivery.
	Backoff Backoff
	// MaxDeliveries bounds how many times one message is delivered in all,
	// failed runs and runs that never ended (a consumer killed during the
	// run) together. A message that keeps killing its consumers is given up
	// (dead-lettered or dropped with ErrMaxDeliveries) once it is over it.
	// 0 means MaxRetries + 1 + DefaultExtraDeliveries.
	MaxDeliveries int
}

// DeliveryLimit is MaxDeliveries, or its default when it is 0.
func (p RetryPolicy) DeliveryLimit() int {
	if p.MaxDeliveries > 0 {
		return p.MaxDeliveries
	}
	return p.MaxRetries + 1 + DefaultExtraDeliveries
}

// Validate checks the policy.
func (p RetryPolicy) Validate() error {
	if p.MaxRetries < 0 {
		return fmt.Errorf("%w: MaxRetries must be >= 0", ErrInvalidOption)
	}
	if p.Backoff == nil {
		return fmt.Errorf("%w: Backoff must not be nil", ErrInvalidOption)
	}
	if p.MaxDeliveries < 0 || (p.MaxDeliveries > 0 && p.MaxDeliveries < p.MaxRetries+1) {
		return fmt.Errorf("%w: MaxDeliveries (%d) must be 0 (default) or at least MaxRetries+1 (%d)",
			ErrInvalidOption, p.MaxDeliveries, p.MaxRetries+1)
	}
	return nil
}

// DefaultExtraDeliveries is how many deliveries beyond MaxRetries+1 a
// message may get before it is treated as a poison pill: deliveries whose
// run never ended (the consumer crashed or was killed during it).
const DefaultExtraDeliveries = 5
