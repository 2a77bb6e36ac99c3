package redis_test

import (
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/redis"
)

func ExampleNew() {
	a, err := redis.New("redis://127.0.0.1:6379/0",
		redis.WithChannelOptions(redis.ChannelOptions{MinIdleTime: 10 * time.Second}))
	if err != nil {
		panic(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		panic(err)
	}
	_ = p
	// Output:
}

func ExampleChannelOptions() {
	_ = channels.Channels{
		"report.requested": {
			MaxInFlight: 2,
			// Reports take minutes: claim a crashed member's work after 5 minutes.
			AdapterOptions: []any{redis.ChannelOptions{MinIdleTime: 5 * time.Minute}},
			Handler:        nil, // your handler
		},
	}
}
