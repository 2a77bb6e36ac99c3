package jetstream

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

func TestParseURLs(t *testing.T) {
	tests := []struct {
		name, raw, display string
		servers            int
		wantErr            error
	}{
		{name: "one", raw: "nats://127.0.0.1:4222", display: "nats://127.0.0.1:4222", servers: 1},
		{name: "credentials hidden", raw: "nats://user:secret@h1:4222, tls://token@h2:4222", display: "nats://h1:4222,tls://h2:4222", servers: 2},
		{name: "scheme", raw: "redis://h:1", wantErr: broker.ErrInvalidOption},
		{name: "no host", raw: "nats://", wantErr: broker.ErrInvalidOption},
		{name: "empty", raw: " , ", wantErr: broker.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servers, display, err := parseURLs(tt.raw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error shows a secret: %v", err)
				}
				return
			}
			if len(servers) != tt.servers || display != tt.display {
				t.Fatalf("servers %v display %q", servers, display)
			}
			if strings.Contains(display, "secret") || strings.Contains(display, "token") {
				t.Fatalf("display shows credentials: %q", display)
			}
		})
	}
	a, err := New("nats://u:secret@127.0.0.1:4222")
	if err != nil || strings.Contains(a.String(), "secret") {
		t.Fatalf("%v %q", err, a)
	}
}

func TestChannelOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		o       ChannelOptions
		wantErr error
	}{
		{name: "zero", o: ChannelOptions{}},
		{name: "replay by time", o: ChannelOptions{DeliverPolicy: DeliverByStartTime, StartTime: time.Now()}},
		{name: "start time missing", o: ChannelOptions{DeliverPolicy: DeliverByStartTime}, wantErr: broker.ErrInvalidOption},
		{name: "start sequence missing", o: ChannelOptions{DeliverPolicy: DeliverByStartSequence}, wantErr: broker.ErrInvalidOption},
		{name: "progress after ack wait", o: ChannelOptions{AckWait: time.Second, InProgressInterval: time.Second}, wantErr: broker.ErrInvalidOption},
		{name: "tiny ack wait", o: ChannelOptions{AckWait: time.Millisecond}, wantErr: broker.ErrInvalidOption},
		{name: "unknown policy", o: ChannelOptions{DeliverPolicy: 42}, wantErr: broker.ErrInvalidOption},
		{name: "negative", o: ChannelOptions{MaxAckPending: -1}, wantErr: broker.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.Validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := StreamName("P.orders.created"); got != "P_orders_created" {
		t.Fatal(got)
	}
	if got := DurableName("v2.payments"); got != "v2_payments" {
		t.Fatal(got)
	}
	if got := keyToken("a.b:c=d"); got != "a=2Eb=3Ac=3Dd" {
		t.Fatal(got)
	}
	for _, tt := range []struct {
		filter, subject string
		want            bool
	}{
		{"a.b", "a.b", true}, {"a.*", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "a", false},
		{"a.*", "a.b.c", false}, {"a.b", "a.c", false},
	} {
		if got := subjectMatches(tt.filter, tt.subject); got != tt.want {
			t.Errorf("subjectMatches(%q, %q) = %v", tt.filter, tt.subject, got)
		}
	}
}

// An existing group keeps what the options leave unset, refuses what
// cannot change, and takes what can.
func TestConsumerConfig(t *testing.T) {
	have := js.ConsumerConfig{Durable: "g", AckPolicy: js.AckExplicitPolicy, DeliverPolicy: js.DeliverAllPolicy,
		AckWait: time.Minute, MaxAckPending: 5000, FilterSubject: "s", MaxDeliver: -1}
	cfg, err := consumerConfig("g", "s", ChannelOptions{}, 10, &have)
	if err != nil || cfg.AckWait != time.Minute || cfg.MaxAckPending != 5000 || cfg.DeliverPolicy != js.DeliverAllPolicy {
		t.Fatalf("unset options changed the group: %+v %v", cfg, err)
	}
	cfg, err = consumerConfig("g", "s", ChannelOptions{AckWait: 5 * time.Second}, 10, &have)
	if err != nil || cfg.AckWait != 5*time.Second {
		t.Fatalf("%+v %v", cfg, err)
	}
	_, err = consumerConfig("g", "s", ChannelOptions{DeliverPolicy: DeliverNew}, 10, &have)
	var ce *ConfigError
	if !errors.Is(err, ErrUpdateNotAllowed) || !errors.As(err, &ce) || ce.Field != "DeliverPolicy" {
		t.Fatalf("deliver policy change: %v", err)
	}
	push := have
	push.DeliverSubject = "node-1"
	if _, err := consumerConfig("g", "s", ChannelOptions{}, 10, &push); !errors.Is(err, ErrPushConsumer) {
		t.Fatalf("push consumer: %v", err)
	}
	fresh, _ := consumerConfig("g", "s", ChannelOptions{}, 2000, nil)
	if fresh.MaxAckPending != 4000 || fresh.AckWait != DefaultAckWait || fresh.DeliverPolicy != js.DeliverNewPolicy || fresh.MaxDeliver != DefaultMaxDeliver {
		t.Fatalf("new consumer: %+v", fresh)
	}
}

func TestSendOptionsMerge(t *testing.T) {
	so, ok := sendOptions([]any{SendOptions{MsgID: "a"}, &SendOptions{ExpectLastSequence: 3}, "other"})
	if !ok || so.MsgID != "a" || so.ExpectLastSequence != 3 {
		t.Fatalf("%+v", so)
	}
	if err := kit.CheckOptions("jetstream", []any{struct{}{}}, isSendOption); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
}
