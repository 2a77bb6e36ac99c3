package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/kafka"
)

// TestPortableStartPositions: a group created after messages were sent on
// its topic starts at the end of every partition, their beginning, or the
// first offset stored at or after the time (ListOffsets by timestamp), as
// its Channel.Start says.
func TestPortableStartPositions(t *testing.T) {
	needKafka(t)
	channelstest.StartPositions(t, func() (broker.Adapter, error) {
		return kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	})
}

// TestPortableKey: channels.WithKey is the record key: the messages of a
// key go to one partition and run in the order they were sent, each
// carrying its key; a different kafka.SendOptions key on the same send is
// refused.
func TestPortableKey(t *testing.T) {
	needKafka(t)
	ctx := context.Background()
	ch := unique("portable.key")
	opts := timings
	opts.Topic.Partitions = 3
	sender := startPlugin(t, nil)
	t.Cleanup(func() { _ = sender.Adapter().(broker.ChannelRemover).RemoveChannel(context.Background(), ch) })
	rec := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "keyed", Channels: channels.Channels{ch: {MaxInFlight: 4, AdapterOptions: []any{opts}, Handler: rec.Handle}}})
	err := sender.SendToChannel(ctx, ch, 0, channels.WithKey("a"), kafka.WithKey("b"))
	if !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("WithKey with another kafka key = %v, want ErrInvalidOption", err)
	}
	const keys, per = 6, 10
	for i := range per {
		for k := range keys {
			if err := sender.SendToChannel(ctx, ch, i, channels.WithKey(fmt.Sprintf("k%d", k))); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 60*time.Second, "every keyed message is handled", func() bool { return rec.Count() >= keys*per })
	partition := map[string]string{}
	seqs := map[string][]int{}
	for _, m := range rec.All() {
		var n int
		if err := m.Decode(&n); err != nil {
			t.Fatal(err)
		}
		p, _, _ := strings.Cut(m.ID, ":")
		if have, ok := partition[m.Key()]; ok && have != p {
			t.Fatalf("key %q on partitions %s and %s", m.Key(), have, p)
		}
		partition[m.Key()] = p
		seqs[m.Key()] = append(seqs[m.Key()], n)
	}
	if len(seqs) != keys {
		t.Fatalf("keys seen: %v", seqs)
	}
	for k, s := range seqs {
		for i, n := range s {
			if n != i {
				t.Fatalf("key %s ran out of order: %v", k, s)
			}
		}
	}
	t.Logf("partitions of the keys: %v", partition)
}
