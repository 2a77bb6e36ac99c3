package channels_test

import (
	"context"
	"fmt"

	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
	"go-micro.dev/v4/logger"
	"go-micro.dev/v4/registry"
	"go-micro.dev/v4/server"
	"go-micro.dev/v4/transport"

	"github.com/microchannels/channels"
	_ "github.com/microchannels/channels/memory" // memory://; import channels/redis for redis://
)

type Billing struct {
	Channels      channels.Channels // read by the plugin
	SendToChannel channels.SendFunc // injected by the plugin
}

// A go-micro service with one channel, offline (memory registry and
// transport), stopped from the program by cancelling its context.
func Example_goMicro() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	p, err := channels.New(channels.WithAdapter("memory://example"), // or "redis://127.0.0.1:6379"
		channels.WithDeadLettering(channels.DeadLettering{Enabled: true}))
	if err != nil {
		panic(err)
	}
	svc := &Billing{Channels: channels.Channels{
		"order.created": channels.On(channels.Typed(func(ctx context.Context, o Order, m *channels.Message) error {
			fmt.Println("charged order", o.ID, "attempt", m.Attempt)
			stop() // the service returns from Run
			return nil
		})),
	}}
	quiet := logger.NewLogger(logger.WithLevel(logger.ErrorLevel))
	service := micro.NewService(
		micro.Server(server.NewServer(server.WithLogger(quiet))), micro.Logger(quiet),
		micro.Name("billing"), micro.Version("2"), micro.Address("127.0.0.1:0"),
		micro.Registry(registry.NewMemoryRegistry()), micro.Transport(transport.NewMemoryTransport()),
		micro.Broker(broker.NewMemoryBroker()),
		micro.Context(ctx), micro.HandleSignal(false),
		micro.AfterStart(func() error { return svc.SendToChannel(ctx, "order.created", Order{ID: 1}) }),
		p.Install(svc), // after micro.Context
	)
	if err := service.Run(); err != nil {
		panic(err)
	}
	fmt.Println("stopped")
	// Output:
	// charged order 1 attempt 1
	// stopped
}
