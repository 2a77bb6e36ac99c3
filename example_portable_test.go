package channels_test

import (
	"context"
	"time"

	"github.com/microchannels/channels"
)

// Where a new group starts (docs/portable.md): the oldest message the
// broker still holds, or the first one stored at or after a time.
func Example_startPosition() {
	h := func(context.Context, *channels.Message) error { return nil }
	h2 := h
	svc := struct{ Channels channels.Channels }{
		Channels: channels.Channels{
			"orders.created": {Start: channels.StartOldest, Handler: h},
			"audit":          {Start: channels.StartAt(time.Now().Add(-time.Hour)), Handler: h2},
		},
	}
	_ = svc
}

// A message key (docs/portable.md): Kafka's record key, a header elsewhere.
func Example_withKey() {
	var svc *channels.Plugin // a started plugin
	ctx := context.Background()
	order := struct{ CustomerID string }{CustomerID: "c-42"}
	err := svc.SendToChannel(ctx, "orders.created", order, channels.WithKey(order.CustomerID))
	_ = err
}
