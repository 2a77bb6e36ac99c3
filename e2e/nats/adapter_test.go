package nats

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

type rec struct {
	mu   sync.Mutex
	msgs []*channels.Message
}

func (r *rec) handle(ctx context.Context, m *channels.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *rec) ids() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, 0, len(r.msgs))
	for _, m := range r.msgs {
		var v struct{ N int }
		_ = m.Decode(&v)
		out = append(out, v.N)
	}
	return out
}

func (r *rec) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.msgs) }

func jsContext(t *testing.T) js.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	j, err := js.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// A new group created with DeliverByStartTime receives exactly the messages
// stored from that time on; one created with DeliverAll replays everything.
func TestReplayFromStartTime(t *testing.T) {
	needNATS(t)
	ctx := context.Background()
	ch := unique("replay.topic")
	snd := startPlugin(t, timings, nil)
	for i := 1; i <= 3; i++ {
		if err := snd.SendToChannel(ctx, ch, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	// Start just after the time the server stored the last message of the
	// first batch: the second batch is stored after it.
	stream, err := snd.Adapter().(*jetstream.Adapter).JetStream().Stream(ctx, jetstream.StreamName(ch))
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	from := last.Time.Add(time.Nanosecond)
	for i := 4; i <= 6; i++ {
		if err := snd.SendToChannel(ctx, ch, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	byTime, all := &rec{}, &rec{}
	startPlugin(t, timings, &service{Name: "replay", Channels: channels.Channels{
		ch: {Group: unique("since"), Handler: byTime.handle,
			AdapterOptions: []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverByStartTime, StartTime: from}}},
	}})
	startPlugin(t, timings, &service{Name: "replay-all", Channels: channels.Channels{
		ch: {Group: unique("all"), Handler: all.handle,
			AdapterOptions: []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverAll}}},
	}})
	eventually(t, 10*time.Second, "replay by time", func() bool { return byTime.count() == 3 })
	eventually(t, 10*time.Second, "replay all", func() bool { return all.count() == 6 })
	consistently(t, 500*time.Millisecond, "nothing more", func() bool { return byTime.count() == 3 && all.count() == 6 })
	if got := byTime.ids(); !equal(got, []int{4, 5, 6}) {
		t.Fatalf("by start time got %v, want [4 5 6]", got)
	}
	if got := all.ids(); !equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("deliver all got %v", got)
	}
	// A new group without a deliver policy starts with new messages.
	fresh := &rec{}
	startPlugin(t, timings, &service{Name: "fresh", Channels: channels.Channels{ch: {Group: unique("new"), Handler: fresh.handle}}})
	if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 7}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "new only", func() bool { return fresh.count() == 1 })
	consistently(t, 300*time.Millisecond, "new only", func() bool { return fresh.count() == 1 })
	if got := fresh.ids(); !equal(got, []int{7}) {
		t.Fatalf("new group got %v", got)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A message id sent twice within the stream's duplicate window is stored
// once; publish expectations refuse a send when they do not hold.
func TestMsgIDAndExpectations(t *testing.T) {
	needNATS(t)
	ctx := context.Background()
	ch := unique("dedup.topic")
	r := &rec{}
	startPlugin(t, timings, &service{Name: "dedup", Channels: channels.Channels{ch: channels.On(r.handle)}})
	snd := startPlugin(t, timings, nil)
	for range 3 {
		if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 1}, jetstream.WithMsgID("order-1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 2}, jetstream.WithMsgID("order-2")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two messages", func() bool { return r.count() == 2 })
	consistently(t, 500*time.Millisecond, "stored once", func() bool { return r.count() == 2 })
	if _, ok := r.msgs[0].Headers["Nats-Msg-Id"]; ok {
		t.Fatalf("transport header handed to the handler: %v", r.msgs[0].Headers)
	}
	st, err := jsContext(t).Stream(ctx, jetstream.StreamName(ch))
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
	err = snd.SendToChannel(ctx, ch, map[string]int{"n": 3}, jetstream.WithExpectLastSequence(last+10))
	if !errors.Is(err, channels.ErrPublish) {
		t.Fatalf("wrong last sequence: %v, want ErrPublish", err)
	}
	if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 3}, jetstream.WithExpectLastSequence(last)); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 4}, jetstream.WithExpectLastMsgID("not-the-last")); !errors.Is(err, channels.ErrPublish) {
		t.Fatalf("wrong last msg id: %v", err)
	}
	// Options of another adapter are refused.
	if err := snd.SendToChannel(ctx, ch, 1, broker.WithAdapterOptions(struct{ MaxLen int }{1})); !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("foreign send option: %v", err)
	}
}

// Stream and consumer settings are applied to existing ones when they
// change; a change the server cannot make is a typed error.
func TestConfigUpdate(t *testing.T) {
	needNATS(t)
	ctx := context.Background()
	ch, group := unique("config.topic"), unique("config-group")
	j := jsContext(t)
	start := func(o jetstream.ChannelOptions) error {
		p := newPlugin(t, timings)
		if err := p.Register(&service{Name: "cfg", Channels: channels.Channels{ch: {Group: group,
			Handler: func(context.Context, *channels.Message) error { return nil }, AdapterOptions: []any{o}}}}); err != nil {
			t.Fatal(err)
		}
		err := p.Start(ctx)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
		return err
	}
	if err := start(jetstream.ChannelOptions{AckWait: 3 * time.Second, Stream: jetstream.StreamOptions{MaxAge: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	stream, durable := jetstream.StreamName(ch), jetstream.DurableName(group)
	cons, err := j.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.AckWait != 3*time.Second || c.DeliverPolicy != js.DeliverNewPolicy || c.MaxDeliver != jetstream.DefaultMaxDeliver {
		t.Fatalf("consumer created with %+v", c)
	}
	// Updatable: AckWait, MaxAckPending, the stream's MaxAge.
	if err := start(jetstream.ChannelOptions{AckWait: 5 * time.Second, MaxAckPending: 77, Stream: jetstream.StreamOptions{MaxAge: 2 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	cons, _ = j.Consumer(ctx, stream, durable)
	if c := cons.CachedInfo().Config; c.AckWait != 5*time.Second || c.MaxAckPending != 77 {
		t.Fatalf("consumer not updated: %+v", c)
	}
	st, _ := j.Stream(ctx, stream)
	if st.CachedInfo().Config.MaxAge != 2*time.Hour {
		t.Fatalf("stream not updated: MaxAge %s", st.CachedInfo().Config.MaxAge)
	}
	// Not updatable: the deliver policy of an existing group, the storage of a stream.
	err = start(jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverAll})
	var ce *jetstream.ConfigError
	if !errors.Is(err, jetstream.ErrUpdateNotAllowed) || !errors.As(err, &ce) || ce.Kind != "consumer" || ce.Field != "DeliverPolicy" {
		t.Fatalf("deliver policy change: %v", err)
	}
	err = start(jetstream.ChannelOptions{Stream: jetstream.StreamOptions{Storage: js.MemoryStorage}})
	if !errors.Is(err, jetstream.ErrUpdateNotAllowed) || !errors.As(err, &ce) || ce.Kind != "stream" || ce.Field != "Storage" {
		t.Fatalf("storage change: %v", err)
	}
	// The failed starts changed nothing.
	cons, _ = j.Consumer(ctx, stream, durable)
	if c := cons.CachedInfo().Config; c.DeliverPolicy != js.DeliverNewPolicy || c.AckWait != 5*time.Second {
		t.Fatalf("consumer changed by a refused update: %+v", c)
	}
}
