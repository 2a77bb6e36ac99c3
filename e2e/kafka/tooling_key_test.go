package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/kafka"
)

// TestToolingListsTheRecordKey: a dead letter's record key is listed with
// it (broker.StoredMessage.Key, dlq.Entry.Key), a record without one has
// none, and the copies a replay or a move sends have the same key.
func TestToolingListsTheRecordKey(t *testing.T) {
	needKafka(t)
	queue := unique("tool.key") + ".DLQ"
	deleteTopics(t, queue, kafka.RemovedTopic(queue))
	a := toolAdapter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, key := range []string{"order-42", ""} {
		h := broker.DeadLetterHeaders(&broker.Message{Channel: "shop.orders", Group: "g", ID: "1", Attempt: 1}, errors.New("e"), time.Now())
		out := &broker.Outgoing{Payload: []byte("p" + key), Headers: h}
		if key != "" {
			out.Options.AdapterOptions = []any{kafka.SendOptions{Key: []byte(key)}}
		}
		if err := a.Publish(ctx, queue, out); err != nil {
			t.Fatal(err)
		}
	}
	es, err := dlq.List(ctx, a, queue, dlq.Filter{})
	if err != nil || len(es) != 2 {
		t.Fatalf("list: %d %v", len(es), err)
	}
	keys := map[string]string{}
	for _, e := range es {
		if e.Key != nil {
			keys[string(e.Payload)] = string(e.Key)
		}
	}
	if len(keys) != 1 || keys["porder-42"] != "order-42" {
		t.Fatalf("keys %v", keys)
	}

	// Replayed and moved, the copies keep it: the record key of the copy.
	retry, parked := unique("tool.key.retry"), unique("tool.key")+".PARKED"
	deleteTopics(t, retry, parked, kafka.RemovedTopic(parked))
	if res, err := dlq.Replay(ctx, a, queue, dlq.Filter{Limit: 1}, dlq.ReplayOptions{To: retry}); err != nil || res.Sent != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if res, err := dlq.Move(ctx, a, queue, dlq.Filter{}, parked); err != nil || res.Sent != 1 {
		t.Fatalf("move: %+v %v", res, err)
	}
	got := map[string]string{}
	for _, topic := range []string{retry, parked} {
		for _, m := range browse(t, a, topic) {
			got[string(m.Payload)] = string(m.Key)
		}
	}
	if len(got) != 2 || got["porder-42"] != "order-42" || got["p"] != "" {
		t.Fatalf("copies: %v", got)
	}
}
