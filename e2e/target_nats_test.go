package e2e

import (
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/jetstream"
)

// Short timings: a message of a stopped or crashed member comes back within
// the suite's deadlines.
var natsTestTimings = jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}

func init() {
	RegisterTarget(Target{
		Name:           "nats",
		NewAdapter:     func() (broker.Adapter, error) { return jetstream.New(brokerenv.NATSURL()) },
		ChannelOptions: []any{natsTestTimings},
		Probe: func() error {
			return brokerenv.Probe("nats", func() error { return brokerenv.DialURL(brokerenv.NATSURL()) })
		},
	})
}
