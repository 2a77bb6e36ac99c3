package embedded_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream/embedded"
)

// The shared adapter has the tooling abilities of the jetstream adapter:
// dead letters written by a plugin on the same server are browsed and
// removed, a channel is listed and tailed; before Connect they fail.
func TestSharedAdapterTooling(t *testing.T) {
	ctx := context.Background()
	o := embedded.Options{Temporary: true, MaxMemory: 32 << 20, MaxStore: 64 << 20}
	tool := embedded.NewShared(o)
	if _, err := tool.Channels(ctx, ""); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("Channels before Connect: %v", err)
	}
	if err := tool.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tool.Close(context.Background()) }()

	ch, dlq := "tool.embedded.topic", "tool.embedded.DLQ"
	p := channelstest.StartPlugin(t, embedded.NewShared(o), &channelstest.Service{Name: "tooling", Channels: channels.Channels{
		ch: {Group: "g", MaxRetries: channels.NoRetries, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler: func(context.Context, *channels.Message) error { return errors.New("boom") }}}})

	tctx, stop := context.WithCancel(ctx)
	tailed := make(chan string, 10)
	tailDone := make(chan error, 1)
	go func() {
		tailDone <- tool.Tail(tctx, ch, func(m *broker.StoredMessage) bool { tailed <- string(m.Payload); return true })
	}()
	var dead []*broker.StoredMessage
	channelstest.EventuallyTrue(t, 15*time.Second, "a tailed message and its dead letter", func() bool {
		if len(tailed) == 0 {
			if err := p.SendToChannel(ctx, ch, 1); err != nil {
				t.Fatal(err)
			}
		}
		dead = dead[:0]
		if err := tool.BrowseDeadLetters(ctx, dlq, func(m *broker.StoredMessage) bool { dead = append(dead, m); return true }); err != nil {
			t.Fatal(err)
		}
		return len(tailed) > 0 && len(dead) > 0
	})
	stop()
	if err := <-tailDone; err != nil {
		t.Fatal(err)
	}
	if dead[0].Headers[broker.HeaderErrorMessage] != "boom" || <-tailed != "1" {
		t.Fatalf("dead letter headers %v", dead[0].Headers)
	}
	list, err := tool.Channels(ctx, "tool.embedded.")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[1].Name != ch || len(list[1].Groups) != 1 || list[1].Groups[0].Name != "g" {
		t.Fatalf("channels %+v", list)
	}
	ids := make([]string, len(dead))
	for i, m := range dead {
		ids[i] = m.ID
	}
	if n, err := tool.RemoveDeadLetters(ctx, dlq, ids...); err != nil || n != len(ids) {
		t.Fatalf("removed %d of %d: %v", n, len(ids), err)
	}
	if err := tool.RemoveMessage(ctx, ch, "999999"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("RemoveMessage of a missing sequence: %v", err)
	}
}
