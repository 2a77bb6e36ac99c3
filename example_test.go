package channels_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
)

type Order struct {
	ID int `json:"id"`
}

type Payments struct {
	Name          string
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

func Example() {
	done := make(chan struct{})
	var attempts []int
	s := &Payments{Name: "payments", Channels: channels.Channels{
		"order.created": {
			MaxRetries: 2,
			Backoff:    channels.ConstantBackoff(time.Millisecond),
			Handler: channels.Typed(func(ctx context.Context, o Order, m *channels.Message) error {
				attempts = append(attempts, m.Attempt)
				if m.Attempt < 2 {
					return errors.New("gateway timeout") // retried
				}
				fmt.Printf("order %d paid on attempt %d by group %s\n", o.ID, m.Attempt, m.Group)
				close(done)
				return nil
			}),
		},
	}}
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		panic(err)
	}
	if err := p.Register(s); err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	defer p.Stop(ctx)

	if err := s.SendToChannel(ctx, "order.created", Order{ID: 7}); err != nil {
		panic(err)
	}
	<-done
	fmt.Println("attempts:", attempts)
	// Output:
	// order 7 paid on attempt 2 by group payments
	// attempts: [1 2]
}

func ExamplePlugin_SendToChannel_errors() {
	p, _ := channels.New(channels.WithAdapter("memory://example"))
	err := p.SendToChannel(context.Background(), "orders", 1)
	fmt.Println(errors.Is(err, channels.ErrNotConnected))
	// Output: true
}

func ExamplePlugin_SendBatch() {
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	defer p.Stop(ctx)

	items := channels.BatchOf[any](Order{ID: 1}, Order{ID: 2}, func() {}, Order{ID: 4})
	items[3].Options = []channels.SendOption{channels.WithHeader("priority", "high")} // this message alone
	err = p.SendBatch(ctx, "order.created", items, channels.WithHeader("source", "import"))
	var be *channels.BatchError
	if errors.As(err, &be) {
		fmt.Println("sent:", be.Sent(), "failed:", be.Failed())
		fmt.Println(errors.Is(be.Errors[2], channels.ErrEncode))
	}
	// Output:
	// sent: 3 failed: [2]
	// true
}
