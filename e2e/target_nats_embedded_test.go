package e2e

import (
	"sync"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream/embedded"
)

// One in-process server for the whole run: every node of a spec connects to
// it, as processes share a broker.
var embeddedNATS = sync.OnceValues(func() (*embedded.Server, error) { return embedded.Start(embedded.Options{Temporary: true}) })

func init() {
	registerTarget(channelstest.Target{
		Name: "nats-embedded",
		NewAdapter: func() (broker.Adapter, error) {
			srv, err := embeddedNATS()
			if err != nil {
				return nil, err
			}
			return srv.Adapter()
		},
		ChannelOptions: []any{natsTestTimings},
		Probe:          func() error { _, err := embeddedNATS(); return err },
	})
}
