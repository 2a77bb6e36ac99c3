package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"
)

// TestFinishDeadlines: a drain's Finish gives the hand-backs and queued
// acks until handBacksDeadline and the consumer channel's close until the
// kit stops waiting (closeMargin more); when the drain's context had
// already ended, still releaseGrace for the acks, then closeMargin for the
// close; without a deadline, DefaultOpTimeout.
func TestFinishDeadlines(t *testing.T) {
	now := time.Now()
	dl := now.Add(time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	by, closeBy := finishDeadlines(ctx, now)
	if !by.Equal(handBacksDeadline(dl)) || !closeBy.Equal(kit.FinishBy(dl)) || closeBy.Sub(by) != closeMargin {
		t.Fatalf("deadline ahead: %v and %v, want %v and %v", by, closeBy, handBacksDeadline(dl), kit.FinishBy(dl))
	}

	past := now.Add(-time.Second)
	ctx, cancel = context.WithDeadline(context.Background(), past)
	defer cancel()
	by, closeBy = finishDeadlines(ctx, now)
	if !by.Equal(now.Add(releaseGrace)) || !closeBy.Equal(by.Add(closeMargin)) {
		t.Fatalf("expired context: %v and %v, want %v and %v", by, closeBy, now.Add(releaseGrace), now.Add(releaseGrace+closeMargin))
	}

	by, closeBy = finishDeadlines(context.Background(), now)
	if !by.Equal(now.Add(DefaultOpTimeout)) || !closeBy.Equal(by) {
		t.Fatalf("no deadline: %v and %v", by, closeBy)
	}
}
