package amqp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// TestPublishToMissingExchange: with the exchange assertion off, a send to
// an exchange that does not exist returns a *broker.PublishError naming the
// broker's 404, while concurrent sends to another channel, its consumer and
// later sends are unaffected.
func TestPublishToMissingExchange(t *testing.T) {
	needAMQP(t)
	ch, missing := unique("confirm.ok"), unique("confirm.missing")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &collector{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 10, Handler: got.handle}}}, nil)
	snd, _ := startPlugin(t, nil, []chamqp.Option{chamqp.WithPublishAssertExchange(false)})
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%20 == 0 {
				err := snd.SendToChannel(ctx, missing, i)
				var pe *broker.PublishError
				if !errors.As(err, &pe) || !errors.Is(err, channels.ErrPublish) || !strings.Contains(err.Error(), "NOT_FOUND") {
					errs <- errors.New("send to the missing exchange: " + errString(err))
				}
				return
			}
			if err := snd.SendToChannel(ctx, ch, i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, 10*time.Second, "95 messages", func() bool { return got.count() == 95 })
	if err := snd.SendToChannel(ctx, ch, "later"); err != nil {
		t.Fatalf("a later send: %v", err)
	}
	eventually(t, 10*time.Second, "the later message", func() bool { return got.count() == 96 })
}

// TestMandatoryUnroutable: a mandatory send that no queue receives is a
// *broker.PublishError caused by a *amqp.ReturnedError; without Mandatory
// RabbitMQ drops it and the send succeeds (as on Node).
func TestMandatoryUnroutable(t *testing.T) {
	needAMQP(t)
	ch := unique("confirm.unroutable")
	cleanup(t, nil, []string{ch})
	snd, _ := startPlugin(t, nil, nil)
	ctx := context.Background()
	if err := snd.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatalf("non-mandatory send: %v", err)
	}
	err := snd.SendToChannel(ctx, ch, 2, chamqp.WithMandatory())
	var ret *chamqp.ReturnedError
	if !errors.Is(err, channels.ErrPublish) || !errors.As(err, &ret) || ret.Code != 312 {
		t.Fatalf("mandatory send: %v", err)
	}
	if err := snd.SendToChannel(ctx, ch, 3); err != nil {
		t.Fatalf("send after the return: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
