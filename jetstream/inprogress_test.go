package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// A member that subscribed with AckWait 10s follows the consumer's AckWait
// when another member of the group sets it to 500 ms: its 2.5 s handler
// keeps its message (reported in progress in time), which runs once.
func TestInProgressFollowsLiveAckWait(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	var runs counter
	slow := func(ctx context.Context, _ *channels.Message) error {
		runs.inc()
		select {
		case <-time.After(2500 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}
	long := jetstream.ChannelOptions{AckWait: 10 * time.Second, FetchTimeout: time.Second}
	startPlugin(t, newAdapter(t, url, long), &service{Name: "ip", Channels: channels.Channels{
		"ip.topic": {Group: "g", MaxInFlight: 2, Handler: slow}}})
	// Another member joins with AckWait 500 ms and leaves.
	short := jetstream.ChannelOptions{AckWait: 500 * time.Millisecond, FetchTimeout: time.Second}
	b, err := channels.New(channels.WithAdapter(newAdapter(t, url, short)))
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Register(&service{Name: "ip", Channels: channels.Channels{"ip.topic": {Group: "g", Handler: slow}}})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	cons, err := j.Consumer(ctx, "ip_topic", "g")
	if err != nil || cons.CachedInfo().Config.AckWait != 500*time.Millisecond {
		t.Fatalf("consumer AckWait: %v", err)
	}
	snd := startPlugin(t, newAdapter(t, url, short), nil)
	if err := snd.SendToChannel(ctx, "ip.topic", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "running", func() bool { return runs.get() >= 1 })
	consistently(t, 3500*time.Millisecond, "one run", func() bool { return runs.get() == 1 })
	eventually(t, 5*time.Second, "acknowledged", func() bool { return consumerIdle(j, "ip_topic", "g") })
}
