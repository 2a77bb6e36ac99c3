package e2e

import (
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

func init() {
	// One bus per target: every node of a spec shares it, as processes share a broker.
	bus := memory.NewBus()
	RegisterTarget(Target{
		Name:       "memory",
		NewAdapter: func() (broker.Adapter, error) { return memory.New(memory.WithBus(bus)), nil },
	})
}
