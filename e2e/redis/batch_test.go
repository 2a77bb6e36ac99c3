package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/redis"
)

// TestBatchPipelines: a batch over several pipeline rounds, sent through an
// autopipelining adapter, is appended in order; a per-message cap applies
// to its message; an option of another adapter fails its message alone.
func TestBatchPipelines(t *testing.T) {
	needRedis(t)
	ctx := context.Background()
	a, err := redis.New(redisURL(), redis.WithAutoPipeline())
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	c := rawClient(t)
	ch, capped := unique("batch.rounds"), unique("batch.capped")
	t.Cleanup(func() { c.Del(context.Background(), ch, capped) })

	n := 2*redis.BatchPipeline + 7
	items := make([]channels.BatchItem, n)
	for i := range items {
		items[i].Payload = i
	}
	items[9].Options = []channels.SendOption{channels.WithSendOptions(struct{ Foreign int }{1})}
	err = p.SendBatch(ctx, ch, items)
	var be *channels.BatchError
	if !errors.As(err, &be) || !slices.Equal(be.Failed(), []int{9}) || !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("SendBatch: %v, want message 9 refused", err)
	}
	entries, err := c.XRange(ctx, ch, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Values[redis.FieldPayload].(string))
	}
	for i := range n {
		if i != 9 {
			want = append(want, strconv.Itoa(i))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stream holds %d entries out of order or incomplete (want %d)", len(got), len(want))
	}

	if err := p.SendBatch(ctx, capped, channels.BatchOf(1, 2, 3, 4, 5, 6), redis.WithMaxLen(4, false)); err != nil {
		t.Fatal(err)
	}
	if l := c.XLen(ctx, capped).Val(); l != 4 {
		t.Fatalf("XLEN of a capped batch = %d, want 4", l)
	}
}
