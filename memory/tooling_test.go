package memory_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

func connected(t *testing.T) *memory.Adapter {
	t.Helper()
	a := memory.New(memory.WithBus(memory.NewBus()))
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

func browse(t *testing.T, a *memory.Adapter, q string) []*broker.StoredMessage {
	t.Helper()
	var out []*broker.StoredMessage
	if err := a.BrowseDeadLetters(context.Background(), q, func(m *broker.StoredMessage) bool {
		out = append(out, m)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBrowseAndRemoveRetained(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	for _, p := range []string{"a", "b", "c"} {
		if err := a.Publish(ctx, "DLQ", &broker.Outgoing{Payload: []byte(p), Headers: map[string]string{"k": p}}); err != nil {
			t.Fatal(err)
		}
	}
	got := browse(t, a, "DLQ")
	if len(got) != 3 || string(got[0].Payload) != "a" || string(got[2].Payload) != "c" || got[1].Headers["k"] != "b" {
		t.Fatalf("browse: %+v", got)
	}
	if got[0].Channel != "DLQ" || got[0].Time.IsZero() || got[0].ID == "" {
		t.Fatalf("stored message fields: %+v", got[0])
	}
	// Browsing twice sees the same: nothing is taken.
	if again := browse(t, a, "DLQ"); len(again) != 3 {
		t.Fatalf("second browse: %d", len(again))
	}
	// fn returning false stops.
	n := 0
	_ = a.BrowseDeadLetters(ctx, "DLQ", func(*broker.StoredMessage) bool { n++; return false })
	if n != 1 {
		t.Fatalf("browse went on after false: %d", n)
	}
	removed, err := a.RemoveDeadLetters(ctx, "DLQ", got[1].ID, "no-such-id")
	if err != nil || removed != 1 {
		t.Fatalf("remove: %d %v", removed, err)
	}
	left := browse(t, a, "DLQ")
	if len(left) != 2 || string(left[0].Payload) != "a" || string(left[1].Payload) != "c" {
		t.Fatalf("after remove: %+v", left)
	}
	if got := browse(t, a, "nothing-here"); len(got) != 0 {
		t.Fatalf("missing queue: %+v", got)
	}
	// The first group of the queue gets what is left.
	var mu sync.Mutex
	var seen []string
	ch := channel("DLQ", func(_ context.Context, m *broker.Message) error {
		mu.Lock()
		seen = append(seen, string(m.Payload))
		mu.Unlock()
		return nil
	})
	ch.MaxInFlight = 1 // one at a time: the order of delivery is the order of the runs
	sub, err := a.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	sub.Start()
	defer func() { _ = sub.Drain(ctx) }()
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 2 })
	if seen[0] != "a" || seen[1] != "c" {
		t.Fatalf("delivered: %v", seen)
	}
}

func TestRemoveMessageFromGroups(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	// Two groups hold a copy each; nobody consumes yet.
	for _, g := range []string{"g1", "g2"} {
		ch := channel("orders", func(context.Context, *broker.Message) error { return nil })
		ch.Group = g
		if _, err := a.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"1", "2"} {
		if err := a.Publish(ctx, "orders", &broker.Outgoing{Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	held := browse(t, a, "orders")
	if len(held) != 2 {
		t.Fatalf("held once per message: %+v", held)
	}
	if err := a.RemoveMessage(ctx, "orders", held[0].ID); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"g1", "g2"} {
		if st, _ := a.Bus().Stats("orders", g); st.Ready != 1 {
			t.Fatalf("group %s ready %d after remove", g, st.Ready)
		}
	}
	if err := a.RemoveMessage(ctx, "orders", held[0].ID); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if err := a.RemoveMessage(ctx, "no-channel", "1"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("remove on missing channel: %v", err)
	}
}

func TestTailSeesLaterSendsAndTakesNothing(t *testing.T) {
	a := connected(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := channel("tailme", func(context.Context, *broker.Message) error { return nil })
	if _, err := a.Subscribe(ctx, ch); err != nil { // a group that does not consume
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "tailme", &broker.Outgoing{Payload: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *broker.StoredMessage, 10)
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		done <- a.Tail(ctx, "tailme", func(m *broker.StoredMessage) bool { got <- m; return true })
	}()
	<-started
	// Tail registers asynchronously: send until the follower sees one.
	deadline := time.After(5 * time.Second)
	var first *broker.StoredMessage
	for first == nil {
		if err := a.Publish(ctx, "tailme", &broker.Outgoing{Payload: []byte("after"), Headers: map[string]string{"h": "v"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-got:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatal("tail saw nothing")
		}
	}
	if string(first.Payload) != "after" || first.Headers["h"] != "v" || first.Channel != "tailme" {
		t.Fatalf("tailed: %+v", first)
	}
	st, _ := a.Bus().Stats("tailme", "g")
	if st.Ready < 2 {
		t.Fatalf("tail took messages from the group: ready %d", st.Ready)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail after cancel: %v", err)
	}
}

func TestTailStopsWhenFnReturnsFalse(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		done <- a.Tail(ctx, "t2", func(*broker.StoredMessage) bool { return false })
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = a.Publish(ctx, "t2", &broker.Outgoing{Payload: []byte("x")})
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("tail did not stop")
		}
	}
}

func TestChannelsLists(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	for _, g := range []string{"b", "a"} {
		ch := channel("ns.orders", func(context.Context, *broker.Message) error { return nil })
		ch.Group = g
		if _, err := a.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	_ = a.Publish(ctx, "ns.orders", &broker.Outgoing{Payload: []byte("1")})
	_ = a.Publish(ctx, "ns.FAILED_MESSAGES", &broker.Outgoing{Payload: []byte("1")})
	_ = a.Publish(ctx, "other", &broker.Outgoing{Payload: []byte("1")})
	got, err := a.Channels(ctx, "ns.")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "ns.FAILED_MESSAGES" || got[1].Name != "ns.orders" {
		t.Fatalf("channels: %+v", got)
	}
	if got[0].Messages != 1 || len(got[0].Groups) != 0 {
		t.Fatalf("retained channel: %+v", got[0])
	}
	o := got[1]
	if o.Messages != -1 || len(o.Groups) != 2 || o.Groups[0].Name != "a" || o.Groups[0].Lag != 1 || o.Groups[1].Lag != 1 {
		t.Fatalf("orders: %+v", o)
	}
	all, _ := a.Channels(ctx, "")
	if len(all) != 3 {
		t.Fatalf("all channels: %+v", all)
	}
}

func TestToolingNeedsConnect(t *testing.T) {
	a := memory.New(memory.WithBus(memory.NewBus()))
	ctx := context.Background()
	if err := a.BrowseDeadLetters(ctx, "q", func(*broker.StoredMessage) bool { return true }); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("browse: %v", err)
	}
	if _, err := a.Channels(ctx, ""); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("channels: %v", err)
	}
}
