package broker_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/microchannels/channels/broker"
)

// The headers a dead-lettered message carries, and how to read the error back.
func ExampleDeadLetterHeaders() {
	msg := &broker.Message{Channel: "orders.created", Group: "payments", ID: "1700000000000-0", Attempt: 4,
		Headers: map[string]string{"tenant": "acme"}}
	h := broker.DeadLetterHeaders(msg, errors.New("card declined"), time.UnixMilli(1700000000000))
	for _, k := range []string{"tenant", "x-original-channel", "x-original-group", "x-original-id",
		"x-redelivered-count", "x-error-name", "x-error-message", "x-error-timestamp"} {
		fmt.Printf("%s: %s\n", k, h[k])
	}
	e := broker.ErrorFromHeaders(h)
	fmt.Println(e.Name, e.Message, e.Stack)
	// Output:
	// tenant: acme
	// x-original-channel: orders.created
	// x-original-group: payments
	// x-original-id: 1700000000000-0
	// x-redelivered-count: 3
	// x-error-name: Error
	// x-error-message: card declined
	// x-error-timestamp: 1700000000000
	// Error card declined Error: card declined
}

// A handler marks an error as not worth retrying.
func ExamplePermanent() {
	err := broker.Permanent(errors.New("invalid order"))
	fmt.Println(errors.Is(err, broker.ErrPermanent), broker.IsPoison(err), err)
	// Output: true true invalid order
}

func ExampleExponentialBackoff() {
	b := broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}
	for attempt := 1; attempt <= 5; attempt++ {
		fmt.Print(b.Delay(attempt), " ")
	}
	// Output: 100ms 200ms 400ms 800ms 1s
}
