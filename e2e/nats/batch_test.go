package nats

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

type numbered struct{ N int }

// TestBatchCreatesStreamKeepsOrder: a batch larger than the acknowledgement
// window to a channel that has no stream yet creates it and stores every
// message once, in the batch order.
func TestBatchCreatesStreamKeepsOrder(t *testing.T) {
	needNATS(t)
	ctx := context.Background()
	ch := unique("batch.order")
	t.Cleanup(func() { _ = jsContext(t).DeleteStream(context.Background(), jetstream.StreamName(ch)) })
	snd := startPlugin(t, timings, nil)
	n := jetstream.BatchWindow*2 + 10
	items := make([]numbered, n)
	for i := range items {
		items[i].N = i
	}
	if err := snd.SendBatch(ctx, ch, channels.BatchOf(items...)); err != nil {
		t.Fatal(err)
	}
	st, err := jsContext(t).Stream(ctx, jetstream.StreamName(ch))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != uint64(n) {
		t.Fatalf("stream holds %d messages, want %d", got, n)
	}
	r := &rec{}
	all := timings
	all.DeliverPolicy = jetstream.DeliverAll
	startPlugin(t, all, &service{Name: "reader", Channels: channels.Channels{ch: {MaxInFlight: 1, Handler: r.handle}}})
	eventually(t, 20*time.Second, "every message", func() bool { return r.count() == n })
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if got := r.ids(); !slices.Equal(got, want) {
		t.Fatalf("read %v, want 0..%d in order", got, n-1)
	}
}

// TestBatchMsgIDs: per-message ids deduplicate across batches; an id given
// to two messages of one batch is refused for both; an expectation that
// does not hold fails its message alone.
func TestBatchMsgIDs(t *testing.T) {
	needNATS(t)
	ctx := context.Background()
	ch := unique("batch.dedup")
	t.Cleanup(func() { _ = jsContext(t).DeleteStream(context.Background(), jetstream.StreamName(ch)) })
	r := &rec{}
	startPlugin(t, timings, &service{Name: "dedup", Channels: channels.Channels{ch: {MaxInFlight: 1, Handler: r.handle}}})
	snd := startPlugin(t, timings, nil)
	withID := func(n int, id string) channels.BatchItem {
		return channels.BatchItem{Payload: numbered{n}, Options: []channels.SendOption{jetstream.WithMsgID(id)}}
	}
	if err := snd.SendBatch(ctx, ch, []channels.BatchItem{withID(1, "a"), withID(2, "b")}); err != nil {
		t.Fatal(err)
	}
	err := snd.SendBatch(ctx, ch, []channels.BatchItem{
		withID(1, "a"), // stored already: acknowledged as a duplicate, not stored again
		withID(3, "c"), withID(4, "c"),
		{Payload: numbered{5}, Options: []channels.SendOption{jetstream.WithExpectLastMsgID("not-the-last")}},
		{Payload: numbered{6}},
	})
	var be *channels.BatchError
	if !errors.As(err, &be) || !slices.Equal(be.Failed(), []int{1, 2, 3}) {
		t.Fatalf("SendBatch: %v, want messages 1, 2 and 3 failed", err)
	}
	if !errors.Is(be.Err(1), channels.ErrInvalidOption) || !errors.Is(be.Err(2), channels.ErrInvalidOption) {
		t.Fatalf("shared id: %v / %v, want ErrInvalidOption", be.Err(1), be.Err(2))
	}
	if !errors.Is(be.Err(3), channels.ErrPublish) {
		t.Fatalf("wrong expectation: %v, want ErrPublish", be.Err(3))
	}
	eventually(t, 10*time.Second, "three messages", func() bool { return r.count() == 3 })
	consistently(t, 300*time.Millisecond, "no more", func() bool { return r.count() == 3 })
	if got := r.ids(); !slices.Equal(got, []int{1, 2, 6}) {
		t.Fatalf("read %v, want [1 2 6]", got)
	}
}
