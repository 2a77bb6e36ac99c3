package memory_test

import (
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/memory"
)

// TestConformance runs the shared conformance suite on the memory adapter;
// every node of a spec shares one bus, as processes share a broker.
func TestConformance(t *testing.T) {
	bus := memory.NewBus()
	channelstest.Run(t, channelstest.Target{
		Name:       "memory",
		NewAdapter: func() (broker.Adapter, error) { return memory.New(memory.WithBus(bus)), nil },
	})
}
