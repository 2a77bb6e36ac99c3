package amqp

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// TestBatchMandatoryReturns: in a batch of mandatory messages larger than
// the confirm window, the messages no queue receives are returned, each
// reported on its own (*ReturnedError, 312), and the others are delivered
// once, in the batch order. The channel is usable by later sends.
func TestBatchMandatoryReturns(t *testing.T) {
	needAMQP(t)
	ch, missing := unique("batch.mandatory"), unique("batch.noqueue")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 1, Handler: got.Handle}}}, nil)
	snd, _ := startPlugin(t, nil, nil)

	n := chamqp.BatchWindow + 200
	items := make([]channels.BatchItem, n)
	var wantReturned []int
	var want []string
	for i := range items {
		items[i].Payload = i
		if i%50 == 7 {
			items[i].Options = []channels.SendOption{chamqp.WithQueue(missing)}
			wantReturned = append(wantReturned, i)
			continue
		}
		want = append(want, strconv.Itoa(i))
	}
	items[1].Options = []channels.SendOption{chamqp.WithTransient()} // an option of its own, over the batch's
	err := snd.SendBatch(context.Background(), ch, items, chamqp.WithMandatory())
	var be *channels.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("SendBatch: %v, want a *BatchError", err)
	}
	if !slices.Equal(be.Failed(), wantReturned) {
		t.Fatalf("failed %v, want %v", be.Failed(), wantReturned)
	}
	for _, i := range wantReturned {
		var ret *chamqp.ReturnedError
		if e := be.Err(i); !errors.As(e, &ret) || ret.Code != 312 || !errors.Is(e, channels.ErrPublish) {
			t.Fatalf("message %d: %v, want a return 312", i, e)
		}
	}
	eventually(t, 20*time.Second, "every routed message", func() bool { return got.Count() == len(want) })
	consistently(t, 300*time.Millisecond, "no more", func() bool { return got.Count() == len(want) })
	var order []string
	for _, m := range got.All() {
		order = append(order, string(m.Payload))
	}
	if !slices.Equal(order, want) {
		t.Fatalf("delivered %v\nwant %v", order, want)
	}
	if err := snd.SendToChannel(context.Background(), ch, "after", chamqp.WithMandatory()); err != nil {
		t.Fatalf("a mandatory send after the batch: %v", err)
	}
	eventually(t, 10*time.Second, "the later message", func() bool { return got.Count() == len(want)+1 })
}

// TestBatchMessageIDs: message ids of one's own reach the handlers; an id
// given to several messages of a batch is refused for each of them.
func TestBatchMessageIDs(t *testing.T) {
	needAMQP(t)
	ch := unique("batch.ids")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 1, Handler: got.Handle}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	ctx := context.Background()

	err := snd.SendBatch(ctx, ch, channels.BatchOf(1, 2, 3), chamqp.WithMessageID("same"))
	var be *channels.BatchError
	if !errors.As(err, &be) || be.Sent() != 0 || !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("one id for three messages: %v", err)
	}
	items := channels.BatchOf("a", "b", "c")
	items[0].Options = []channels.SendOption{chamqp.WithMessageID("id-a")}
	items[2].Options = []channels.SendOption{chamqp.WithMessageID("id-c")}
	if err := snd.SendBatch(ctx, ch, items); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "three messages", func() bool { return got.Count() == 3 })
	msgs := got.All()
	if msgs[0].ID != "id-a" || msgs[2].ID != "id-c" || msgs[1].ID == "" || strings.HasPrefix(msgs[1].ID, "id-") {
		t.Fatalf("ids %q %q %q", msgs[0].ID, msgs[1].ID, msgs[2].ID)
	}
}

// TestBatchToMissingExchange: with the exchange assertion off, a batch to an
// exchange that does not exist fails message by message with the broker's
// error, and a batch to an existing channel afterwards is delivered.
func TestBatchToMissingExchange(t *testing.T) {
	needAMQP(t)
	ch, missing := unique("batch.ok"), unique("batch.missing")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 10, Handler: got.Handle}}}, nil)
	snd, _ := startPlugin(t, nil, []chamqp.Option{chamqp.WithPublishAssertExchange(false)})
	ctx := context.Background()

	err := snd.SendBatch(ctx, missing, channels.BatchOf(1, 2, 3, 4, 5))
	var be *channels.BatchError
	if !errors.As(err, &be) || be.Sent() != 0 {
		t.Fatalf("batch to a missing exchange: %v", err)
	}
	for i, e := range be.Errors {
		var pe *broker.PublishError
		if !errors.As(e, &pe) {
			t.Fatalf("message %d: %v, want a *broker.PublishError", i, e)
		}
	}
	if !strings.Contains(be.Errors[0].Error(), "NOT_FOUND") {
		t.Fatalf("the first message: %v, want the broker's 404", be.Errors[0])
	}
	if err := snd.SendBatch(ctx, ch, channels.BatchOf(1, 2, 3)); err != nil {
		t.Fatalf("a batch to an existing channel: %v", err)
	}
	eventually(t, 10*time.Second, "three messages", func() bool { return got.Count() == 3 })
}
