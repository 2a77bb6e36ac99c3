package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/redis"
)

// The test server has no replica: a send that waits for one is written,
// and fails with a ReplicationError once the WAIT timeout passed; a send
// that opts out, or that asks for none, succeeds.
func TestWaitReplicasWithoutReplica(t *testing.T) {
	needRedis(t)
	ch := unique("replicas.none")
	c := rawClient(t)
	t.Cleanup(func() { c.Del(context.Background(), ch) })

	p := startPlugin(t, crashTimings, nil)
	ctx := context.Background()
	start := time.Now()
	err := p.SendToChannel(ctx, ch, "one", redis.WithReplicas(1, 50*time.Millisecond))
	var re *redis.ReplicationError
	if !errors.Is(err, broker.ErrPublish) || !errors.As(err, &re) {
		t.Fatalf("send waiting for a replica on a server without one: err = %v, want ErrPublish with a ReplicationError", err)
	}
	if re.Wanted != 1 || re.Acked != 0 || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("ReplicationError %+v after %s: want 0 of 1 after the 50ms timeout", re, time.Since(start))
	}
	if n := c.XLen(ctx, ch).Val(); n != 1 {
		t.Fatalf("XLEN = %d after the refused send, want 1: the message was written", n)
	}

	// The adapter-wide setting, and the send that opts out of it.
	a, err := redis.New(redisURL(), redis.WithWaitReplicas(1, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	w, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	if err := w.SendToChannel(ctx, ch, "two"); !errors.As(err, &re) {
		t.Fatalf("adapter-wide WaitReplicas: err = %v, want a ReplicationError", err)
	}
	if err := w.SendToChannel(ctx, ch, "three", redis.WithReplicas(-1, 0)); err != nil {
		t.Fatalf("send opting out of the wait: %v", err)
	}
	errs := w.SendBatch(ctx, ch, []channels.BatchItem{{Payload: "four"}, {Payload: "five"}})
	var be *broker.BatchError
	if !errors.As(errs, &be) || len(be.Errors) != 2 || !errors.As(be.Errors[0], &re) || !errors.As(be.Errors[1], &re) {
		t.Fatalf("batch with WaitReplicas: err = %v, want a ReplicationError per message", errs)
	}
	if n := c.XLen(ctx, ch).Val(); n != 5 {
		t.Fatalf("XLEN = %d, want 5: every message was written", n)
	}
}
