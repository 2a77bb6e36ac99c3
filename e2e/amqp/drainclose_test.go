package amqp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// TestDrainTimeoutClosesChannel: a drain whose deadline passes while a
// handler ignores its cancelled context still closes the consumer channel
// in the time kept for it (the message goes back to the queue): the error
// names the running handler, not an abandoned channel close.
func TestDrainTimeoutClosesChannel(t *testing.T) {
	needAMQP(t)
	a := toolAdapter(t)
	ch := unique("drain.stuck")
	cleanup(t, []string{"g." + ch}, []string{ch})
	started, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := a.Subscribe(ctx, &broker.Channel{Name: ch, Group: "g", MaxInFlight: 1,
		Handler: func(context.Context, *broker.Message) error {
			started <- struct{}{}
			<-release // ignores its context
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	sub.Start()
	if err := a.Publish(ctx, ch, &broker.Outgoing{Payload: []byte("stuck")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the handler did not start")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	err = sub.Drain(dctx)
	var de *broker.DrainError
	if !errors.As(err, &de) {
		t.Fatalf("drain: %v, want a DrainError", err)
	}
	if strings.Contains(err.Error(), "close consumer channel") {
		t.Fatalf("drain: %v: the channel's close was abandoned", err)
	}
	eventually(t, 10*time.Second, "the message back in the queue", func() bool { return queueLen(t, "g."+ch) == 1 })
}
