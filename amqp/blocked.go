package amqp

import (
	"context"
	"fmt"

	"github.com/microchannels/channels/broker"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// watchBlocked follows connection.blocked and connection.unblocked of c.
func (s *session) watchBlocked(c *amqp091.Connection) {
	notes := c.NotifyBlocked(make(chan amqp091.Blocking, 4))
	go func() {
		for b := range notes {
			s.setBlocked(b.Active, b.Reason)
		}
	}()
}

func (s *session) setBlocked(active bool, reason string) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	switch {
	case active && s.unblocked == nil:
		if reason == "" {
			reason = "resource alarm"
		}
		s.blocked, s.unblocked = reason, make(chan struct{})
		s.blocks++
		s.log.Warn("channels/amqp: RabbitMQ blocked the connection; sends wait until it is unblocked (bounded by their context)",
			"connection", s.name, "reason", reason)
	case !active && s.unblocked != nil:
		close(s.unblocked)
		s.blocked, s.unblocked = "", nil
		s.log.Info("channels/amqp: RabbitMQ unblocked the connection", "connection", s.name)
	}
}

// blockEpoch returns the number of blocks so far.
func (s *session) blockEpoch() uint64 {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	return s.blocks
}

// blockedSince reports whether the connection was blocked at some time
// since blockEpoch returned epoch: it is blocked now, or was blocked again
// meanwhile.
func (s *session) blockedSince(epoch uint64) bool {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	return s.blocks != epoch || s.unblocked != nil
}

// isBlocked reports whether RabbitMQ blocks the connection now.
func (s *session) isBlocked() bool {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	return s.unblocked != nil
}

// waitUnblocked returns at once when the connection is not blocked, else
// when it is unblocked or ctx ends (an error wrapping errBlocked and ctx's
// error). A write to a blocked connection would hang: RabbitMQ stops
// reading it.
func (s *session) waitUnblocked(ctx context.Context) error {
	s.blockMu.Lock()
	reason, unblocked := s.blocked, s.unblocked
	s.blockMu.Unlock()
	if unblocked == nil {
		return nil
	}
	select {
	case <-unblocked:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%s): %w", errBlocked, reason, ctx.Err())
	case <-s.closed:
		return broker.ErrClosed
	}
}
