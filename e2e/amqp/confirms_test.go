package amqp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

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
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 10, Handler: got.Handle}}}, nil)
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
	eventually(t, 10*time.Second, "95 messages", func() bool { return got.Count() == 95 })
	if err := snd.SendToChannel(ctx, ch, "later"); err != nil {
		t.Fatalf("a later send: %v", err)
	}
	eventually(t, 10*time.Second, "the later message", func() bool { return got.Count() == 96 })
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

// TestDeletedExchange: an exchange deleted under a sender that declared it
// fails the next send to it with NOT_FOUND, then is declared again (the
// cache of declared exchanges is cleared on a 404), so sends to it work
// again; the concurrent sends to a healthy channel never fail, even when
// the failing publish closed the confirm channel they shared.
func TestDeletedExchange(t *testing.T) {
	needAMQP(t)
	healthy, deleted := unique("confirm.healthy"), unique("confirm.deleted")
	cleanup(t, []string{"g." + healthy, "g." + deleted}, []string{healthy, deleted})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{healthy: {Group: "g", MaxInFlight: 50, Handler: got.Handle}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	ctx := context.Background()
	for _, ch := range []string{healthy, deleted} {
		if err := snd.SendToChannel(ctx, ch, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := rawChannel(t, rawConn(t)).ExchangeDelete(deleted, false, false); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var healthyFailed, deletedFailed atomic.Int64
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%20 == 0 {
				if snd.SendToChannel(ctx, deleted, i) != nil {
					deletedFailed.Add(1)
				}
				return
			}
			if err := snd.SendToChannel(ctx, healthy, i); err != nil {
				healthyFailed.Add(1)
				t.Logf("healthy send: %v", err)
			}
		}()
	}
	wg.Wait()
	t.Logf("sends to the deleted exchange that failed: %d of 10", deletedFailed.Load())
	if n := healthyFailed.Load(); n != 0 {
		t.Errorf("%d of 190 sends to a healthy channel failed", n)
	}
	eventually(t, 10*time.Second, "sends to the deleted channel work again", func() bool {
		return snd.SendToChannel(ctx, deleted, "again") == nil
	})
	// Every message sent to the healthy channel arrives (a send retried
	// after a collateral close may arrive twice: at-least-once).
	eventually(t, 10*time.Second, "the healthy channel's 191 messages", func() bool {
		seen := map[string]bool{}
		for _, m := range got.All() {
			seen[string(m.Payload)] = true
		}
		return len(seen) == 191
	})
	t.Logf("healthy channel: %d deliveries for 191 messages", got.Count())
}
