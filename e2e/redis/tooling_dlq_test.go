package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

// TestToolingReplayRefusesAnotherSerializer: dead letters written by a
// plugin with MsgPack, read by the tooling with JSON (the command's
// default), do not decode: a replay or a move refuses them and keeps them,
// instead of sending them without headers and deleting them; with Force
// they are sent as read.
func TestToolingReplayRefusesAnotherSerializer(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		queue, to := unique("tool.ser.DLQ"), unique("tool.ser.retry")
		raw := tt.raw(t)
		t.Cleanup(func() { raw.Del(context.Background(), queue, to) })

		writer := tt.adapter(t)
		if err := writer.Connect(ctx, broker.Env{Serializer: broker.MsgPack{}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = writer.Close(context.Background()) })
		h := broker.DeadLetterHeaders(&broker.Message{Channel: "shop.orders", Group: "g", ID: "1", Attempt: 3,
			Headers: map[string]string{"trace": "t1"}}, errors.New("timeout"), time.Now())
		if err := writer.Publish(ctx, queue, &broker.Outgoing{Payload: []byte(`{"n":1}`), Headers: h}); err != nil {
			t.Fatal(err)
		}

		tool := toolAdapter(t, tt) // JSON
		es, err := dlq.List(ctx, tool, queue, dlq.Filter{})
		if err != nil || len(es) != 1 || es[0].DecodeError == "" || es[0].Headers != nil {
			t.Fatalf("list: %+v %v", es, err)
		}
		if _, err := dlq.Replay(ctx, tool, queue, dlq.Filter{}, dlq.ReplayOptions{To: to}); !errors.Is(err, dlq.ErrUnreadable) {
			t.Fatalf("replay: %v", err)
		}
		if _, err := dlq.Move(ctx, tool, queue, dlq.Filter{}, to); !errors.Is(err, dlq.ErrUnreadable) {
			t.Fatalf("move: %v", err)
		}
		if n := raw.XLen(ctx, queue).Val(); n != 1 {
			t.Fatalf("the dead letter was removed: %d left", n)
		}
		if n := raw.XLen(ctx, to).Val(); n != 0 {
			t.Fatalf("%d copies sent", n)
		}

		// Read with the plugin's serializer, it replays with its headers.
		right := tt.adapter(t)
		if err := right.Connect(ctx, broker.Env{Serializer: broker.MsgPack{}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = right.Close(context.Background()) })
		res, err := dlq.Replay(ctx, right, queue, dlq.Filter{}, dlq.ReplayOptions{To: to})
		if err != nil || res.Sent != 1 || res.Removed != 1 {
			t.Fatalf("replay with MsgPack: %+v %v", res, err)
		}
		sent := browseAll(t, right, to)
		if len(sent) != 1 || sent[0].Headers["trace"] != "t1" {
			t.Fatalf("replayed: %+v", sent)
		}
	})
}
