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
// it (broker.StoredMessage.Key, dlq.Entry.Key); a record without one has
// none.
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
}
