package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

func trace(name string) hooks.Interceptor {
	return hooks.Interceptor{
		Name: name,
		LocalChannel: func(next broker.Handler, info hooks.Info) broker.Handler {
			return func(ctx context.Context, m *broker.Message) error {
				fmt.Println(name, "before", info.Channel)
				err := next(ctx, m)
				fmt.Println(name, "after")
				return err
			}
		},
		SendToChannel: func(next hooks.SendFunc) hooks.SendFunc {
			return func(ctx context.Context, ch string, p any, opts ...broker.PublishOption) error {
				fmt.Println(name, "send", ch)
				return next(ctx, ch, p, opts...)
			}
		},
	}
}

// The first registered interceptor is the outermost.
func Example_order() {
	ics := []hooks.Interceptor{trace("A"), trace("B")}
	h := hooks.ChainHandler(func(ctx context.Context, m *broker.Message) error {
		fmt.Println("handler")
		return nil
	}, hooks.Info{Channel: "orders"}, ics)
	_ = h(context.Background(), &broker.Message{})

	send := hooks.ChainSend(func(ctx context.Context, ch string, p any, opts ...broker.PublishOption) error {
		fmt.Println("publish", ch)
		return nil
	}, ics)
	_ = send(context.Background(), "orders", 1)
	// Output:
	// A before orders
	// B before orders
	// handler
	// B after
	// A after
	// A send orders
	// B send orders
	// publish orders
}

func ExampleRecover() {
	h := hooks.ChainHandler(func(ctx context.Context, m *broker.Message) error {
		panic("boom")
	}, hooks.Info{}, []hooks.Interceptor{hooks.Recover()})
	err := h(context.Background(), &broker.Message{})
	var pe *broker.PanicError
	fmt.Println(errors.As(err, &pe), pe.Value)
	// Output: true boom
}

func ExampleTimeout() {
	h := hooks.ChainHandler(func(ctx context.Context, m *broker.Message) error {
		<-ctx.Done()
		return ctx.Err()
	}, hooks.Info{}, []hooks.Interceptor{hooks.Timeout(10 * time.Millisecond)})
	fmt.Println(h(context.Background(), &broker.Message{}))
	// Output: context deadline exceeded
}
