package amqp

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		opts    []Option
		want    string
		wantErr error
	}{
		{name: "plain", url: "amqp://guest:guest@127.0.0.1:5672/", want: "amqp amqp://127.0.0.1:5672"},
		{name: "failover", url: "amqp://u:p@a:5672/; amqps://u:p@b:5671/v", want: "amqp amqp://a:5672;amqps://b:5671"},
		{name: "escaped", url: "amqp://app:2024%2Fp%23ss@host/", want: "amqp amqp://host"},
		// Unescaped reserved characters in a password: refused, never shown.
		{name: "slash after digits", url: "amqp://app:2024/Secret@host/", wantErr: broker.ErrInvalidOption},
		{name: "hash", url: "amqp://app:pa#Secret@host/", wantErr: broker.ErrInvalidOption},
		{name: "question mark", url: "amqp://app:pa?Secret@host/", wantErr: broker.ErrInvalidOption},
		{name: "second of a list", url: "amqp://u:p@a/;amqp://app:2024/Secret@host/", wantErr: broker.ErrInvalidOption},
		{name: "scheme", url: "redis://127.0.0.1:6379", wantErr: broker.ErrInvalidOption},
		{name: "empty", url: " ; ", wantErr: broker.ErrInvalidOption},
		{name: "publisher channels", url: DefaultURL, opts: []Option{WithPublisherChannels(0)}, wantErr: broker.ErrInvalidOption},
		{name: "exchange type", url: DefaultURL, opts: []Option{WithChannelOptions(ChannelOptions{Exchange: ExchangeOptions{Type: "nope"}})},
			wantErr: broker.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.url, tt.opts...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), "guest:guest") || strings.Contains(err.Error(), ":p@") ||
					strings.Contains(err.Error(), "Secret") || strings.Contains(err.Error(), "2024") {
					t.Fatalf("credentials in %q", err)
				}
				return
			}
			if a.String() != tt.want {
				t.Fatalf("String() = %q, want %q", a.String(), tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	a, err := broker.Resolve("amqp://guest:secret@127.0.0.1:5672/")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "AMQP" || strings.Contains(a.(*Adapter).String(), "secret") {
		t.Fatalf("%s %s", a.Name(), a.(*Adapter).String())
	}
	if _, err := broker.Resolve("AMQP"); err != nil {
		t.Fatal(err)
	}
}

func TestDelayBucket(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{{0, 1}, {time.Microsecond, 1}, {20 * time.Millisecond, 20}, {137 * time.Millisecond, 140},
		{2345 * time.Millisecond, 2400}, {30 * time.Second, 30000}, {30001 * time.Millisecond, 31000}} {
		if got := delayBucket(tt.d); got != tt.want || time.Duration(got)*time.Millisecond < tt.d {
			t.Errorf("delayBucket(%s) = %d, want %d", tt.d, got, tt.want)
		}
	}
	if RetryQueueName("g.orders", 137*time.Millisecond) != "g.orders.retry.140ms" {
		t.Fatal(RetryQueueName("g.orders", 137*time.Millisecond))
	}
}

func TestReadHistory(t *testing.T) {
	tests := []struct {
		name                string
		h                   amqp091.Table
		quorum, redelivered bool
		failed, unfinished  int
		final, failure      bool
	}{
		{name: "fresh", h: nil},
		{name: "node retry (byte)", h: amqp091.Table{"x-redelivered-count": int8(2)}, failed: 2},
		{name: "our retry", h: amqp091.Table{"x-redelivered-count": int32(1), "x-group": "g", "x-error-message": "boom"},
			failed: 1, failure: true},
		{name: "string count", h: amqp091.Table{"x-redelivered-count": "3"}, failed: 3},
		{name: "dead letter as a channel", h: amqp091.Table{"x-redelivered-count": int32(4), "x-original-group": "other",
			"x-error-message": "boom"}},
		{name: "dead letter retried here", h: amqp091.Table{"x-redelivered-count": int32(1), "x-original-group": "other",
			"x-group": "g", "x-error-message": "boom"}, failed: 1, failure: true},
		{name: "kept", h: amqp091.Table{HeaderFinal: true, "x-group": "g", "x-error-message": "boom"}, final: true, failure: true},
		{name: "quorum", h: amqp091.Table{HeaderDeliveryCount: int64(2), HeaderUnfinished: int32(1), "x-group": "g"},
			quorum: true, redelivered: true, unfinished: 3},
		// What a producer writes is not trusted.
		{name: "forged final", h: amqp091.Table{HeaderFinal: true, "x-error-message": "forged"}},
		{name: "forged final of another group", h: amqp091.Table{HeaderFinal: true, "x-group": "other", "x-error-message": "forged"}},
		{name: "forged unfinished", h: amqp091.Table{HeaderUnfinished: int32(99)}},
		{name: "negative unfinished", h: amqp091.Table{HeaderUnfinished: int32(-1000), "x-group": "g"}},
		{name: "huge unfinished", h: amqp091.Table{HeaderUnfinished: int64(1 << 40), "x-group": "g"}, unfinished: maxCount},
		{name: "negative count", h: amqp091.Table{"x-redelivered-count": int32(-5)}},
		{name: "delivery count on a classic queue", h: amqp091.Table{HeaderDeliveryCount: int64(50)}, redelivered: true},
		{name: "delivery count on a first delivery", h: amqp091.Table{HeaderDeliveryCount: int64(50)}, quorum: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := readHistory(tt.h, "g", tt.quorum, tt.redelivered)
			if h.failed != tt.failed || h.unfinished != tt.unfinished || h.final != tt.final || h.quorum != tt.quorum ||
				(h.failure != nil) != tt.failure {
				t.Fatalf("%+v", h)
			}
		})
	}
}

func TestTables(t *testing.T) {
	tb := toTable(map[string]string{"x-redelivered-count": "2", "k": "v"})
	if tb["x-redelivered-count"] != int32(2) || tb["k"] != "v" {
		t.Fatalf("%v", tb)
	}
	h := fromTable(amqp091.Table{"s": "v", "b": []byte("x"), "i": int8(5), "f": 1.5, "t": true,
		"x-death": []any{amqp091.Table{"count": int64(1)}}, HeaderUnfinished: int32(1), "arr": []any{"a", int32(1)}})
	want := map[string]string{"s": "v", "b": "x", "i": "5", "f": "1.5", "t": "true", "arr": `["a",1]`}
	if len(h) != len(want) {
		t.Fatalf("%v", h)
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
}

func TestSendOptions(t *testing.T) {
	so := sendOptions([]any{SendOptions{RoutingKey: "a", Priority: 1}, &SendOptions{Priority: 2, Mandatory: true}})
	if so.RoutingKey != "a" || so.Priority != 2 || !so.Mandatory {
		t.Fatalf("%+v", so)
	}
	if err := (SendOptions{Expiration: -1}).Validate(); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
	if _, err := broker.NewPublishOptions(broker.WithAdapterOptions(SendOptions{DeliveryMode: 7})); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
}

// A connection with amqp091's automatic Recovery is refused (its channels
// come back in place with delivery tags from 1 again).
func TestNewFromConnectionRefusesRecovery(t *testing.T) {
	conn := &amqp091.Connection{Config: amqp091.Config{Recovery: &amqp091.Recovery{}}}
	if _, err := NewFromClient(conn); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("NewFromClient with Recovery: %v", err)
	}
}
