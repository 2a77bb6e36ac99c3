package channelstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// StartPositionCase is one scenario of StartPositions: where the new group
// starts, and the payloads it must see of the messages sent before it was
// created (1, 2 and 3 before the time of StartAt, 4 and 5 after it).
type StartPositionCase struct {
	Name  string
	Start func(at time.Time) channels.StartPosition
	// Want are the earlier payloads the group sees (besides the one sent
	// after it was created, which every group sees).
	Want []int
}

// StartPositionCases are the portable start positions: StartNewest sees
// none of the earlier messages, StartOldest all five, StartAt the two sent
// after its time.
var StartPositionCases = []StartPositionCase{
	{"newest", func(time.Time) channels.StartPosition { return channels.StartNewest }, nil},
	{"oldest", func(time.Time) channels.StartPosition { return channels.StartOldest }, []int{1, 2, 3, 4, 5}},
	{"at", channels.StartAt, []int{4, 5}},
}

// StartPositions runs the cases on an adapter made by newAdapter, each on a
// channel of its own (removed afterwards when the adapter is a
// broker.ChannelRemover): five messages are sent on a channel no group
// reads, 1 to 3 before the time given to Start and 4 and 5 after it; then a
// group is created with that start position and one more message (6) is
// sent. The group must see exactly the case's Want and 6 (in any order:
// a Kafka topic may have several partitions).
func StartPositions(t *testing.T, newAdapter func() (broker.Adapter, error), cases ...StartPositionCase) {
	if len(cases) == 0 {
		cases = StartPositionCases
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			ctx := context.Background()
			ch := Unique("portable.start." + tc.Name)
			sender := startWith(t, newAdapter, nil)
			if rm, ok := sender.Adapter().(broker.ChannelRemover); ok {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := rm.RemoveChannel(ctx, ch); err != nil {
						t.Logf("remove %s: %v", ch, err)
					}
				})
			}
			send := func(n int) {
				t.Helper()
				if err := sender.SendToChannel(ctx, ch, n); err != nil {
					t.Fatalf("send %d: %v", n, err)
				}
			}
			for n := 1; n <= 3; n++ {
				send(n)
			}
			// The time lies strictly between the stored times of 3 and 4,
			// with a margin for the brokers' millisecond timestamps.
			at := time.Now().Add(5 * time.Millisecond)
			EventuallyTrue(t, time.Second, "the clock passes the start time", func() bool { return time.Now().After(at.Add(5 * time.Millisecond)) })
			send(4)
			send(5)

			rec := &Recorder{}
			startWith(t, newAdapter, &Service{Name: "portable", Channels: channels.Channels{ch: {
				Group: Unique("portable-group"), Start: tc.Start(at), Handler: rec.Handle}}})
			send(6)
			want := append(slices.Clone(tc.Want), 6)
			got := func() []int {
				var out []int
				for _, m := range rec.All() {
					var n int
					if err := m.Decode(&n); err != nil {
						t.Errorf("decode: %v", err)
					}
					out = append(out, n)
				}
				slices.Sort(out)
				return out
			}
			EventuallyTrue(t, 30*time.Second, fmt.Sprintf("the group sees %v", want), func() bool { return len(got()) >= len(want) })
			ConsistentlyTrue(t, time.Second, fmt.Sprintf("the group sees %v and nothing else", want), func() bool { return slices.Equal(got(), want) })
		})
	}
}

// StartPositionRefused checks that a start position the adapter cannot
// honour is refused at Register with an error wrapping
// channels.ErrUnsupported and channels.ErrInvalidOption.
func StartPositionRefused(t *testing.T, newAdapter func() (broker.Adapter, error), start channels.StartPosition) {
	t.Helper()
	a, err := newAdapter()
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Register(&Service{Name: "portable", Channels: channels.Channels{Unique("portable.refused"): {
		Start: start, Handler: func(context.Context, *channels.Message) error { return nil }}}})
	var ue *channels.UnsupportedError
	if !errors.Is(err, channels.ErrUnsupported) || !errors.Is(err, channels.ErrInvalidOption) || !errors.As(err, &ue) {
		t.Fatalf("Register with start %s = %v, want an *UnsupportedError", start, err)
	}
}

func startWith(t *testing.T, newAdapter func() (broker.Adapter, error), schema any) *channels.Plugin {
	t.Helper()
	a, err := newAdapter()
	if err != nil {
		t.Fatal(err)
	}
	return StartPlugin(t, a, schema)
}

// KeyCarried checks the portable message key on an adapter made by
// newAdapter: messages sent with channels.WithKey reach a group of one
// member running one handler at a time in the order they were sent, each
// with its key (Message.Key), and an empty key is refused.
func KeyCarried(t *testing.T, newAdapter func() (broker.Adapter, error)) {
	t.Helper()
	ctx := context.Background()
	ch := Unique("portable.key")
	sender := startWith(t, newAdapter, nil)
	if rm, ok := sender.Adapter().(broker.ChannelRemover); ok {
		t.Cleanup(func() { // after the consumer stopped
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = rm.RemoveChannel(ctx, ch)
		})
	}
	rec := &Recorder{}
	startWith(t, newAdapter, &Service{Name: "portable", Channels: channels.Channels{ch: {
		Group: Unique("portable-group"), MaxInFlight: 1, Handler: rec.Handle}}})
	if err := sender.SendToChannel(ctx, ch, 0, channels.WithKey("")); !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("send with an empty key = %v, want ErrInvalidOption", err)
	}
	const n = 10
	for i := range n {
		if err := sender.SendToChannel(ctx, ch, i, channels.WithKey(fmt.Sprintf("k%d", i%2))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	EventuallyTrue(t, 30*time.Second, "every keyed message is handled", func() bool { return rec.Count() >= n })
	for i, m := range rec.All() {
		var got int
		if err := m.Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got != i || m.Key() != fmt.Sprintf("k%d", i%2) {
			t.Fatalf("message %d: payload %d, key %q; want %d with key k%d", i, got, m.Key(), i, i%2)
		}
	}
}
