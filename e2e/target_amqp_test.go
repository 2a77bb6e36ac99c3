package e2e

import (
	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

func init() {
	RegisterTarget(Target{
		Name:       "amqp",
		NewAdapter: func() (broker.Adapter, error) { return amqp.New(brokerenv.AMQPURL()) },
		Probe:      func() error { return brokerenv.Probe("amqp", brokerenv.PingAMQP) },
	})
}
