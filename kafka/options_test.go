package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/microchannels/channels/broker"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		url     string
		brokers []string
		tls     bool
		mech    string
	}{
		{"kafka://127.0.0.1:9092", []string{"127.0.0.1:9092"}, false, ""},
		{"kafka://a:9092,b:9093", []string{"a:9092", "b:9093"}, false, ""},
		{"kafka://host", []string{"host:9092"}, false, ""},
		{"kafka://user:secret@host:9092", []string{"host:9092"}, false, "PLAIN"},
		{"kafka://user:secret@host:9092?sasl=scram-sha-512&tls=true", []string{"host:9092"}, true, "SCRAM-SHA-512"},
		{"kafka+ssl://host:9093", []string{"host:9093"}, true, ""},
	}
	for _, c := range cases {
		brokers, display, mech, useTLS, err := parseURL(c.url)
		if err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		if strings.Join(brokers, ",") != strings.Join(c.brokers, ",") || useTLS != c.tls {
			t.Errorf("%s: brokers %v tls %v", c.url, brokers, useTLS)
		}
		if strings.Contains(display, "secret") || strings.Contains(display, "user") {
			t.Errorf("%s: display %q shows credentials", c.url, display)
		}
		got := ""
		if mech != nil {
			got = mech.Name()
		}
		if got != c.mech {
			t.Errorf("%s: mechanism %q, want %q", c.url, got, c.mech)
		}
	}
	if _, _, m, _, _ := parseURL("kafka://u:p@h:1"); m.(plain.Mechanism).Password != "p" {
		t.Errorf("the password is not used")
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, u := range []string{"", "redis://h:1", "kafka://", "kafka://u:secret@h:1?sasl=gssapi", "kafka://h:1?tls=maybe",
		"kafka://u:secret@h:1:2:3%zz"} {
		_, _, _, _, err := parseURL(u)
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%q: %v, want ErrInvalidOption", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error shows the password: %v", u, err)
		}
	}
}

func TestAdapterNameAndString(t *testing.T) {
	a, err := New("kafka://user:secret@h1:9092,h2:9092")
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "Kafka" || a.String() != "kafka://h1:9092,h2:9092" {
		t.Fatalf("%s %s", a.Name(), a)
	}
	if _, err := NewFromBrokers(nil); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("no broker: %v", err)
	}
}

func TestChannelOptions(t *testing.T) {
	bad := []ChannelOptions{
		{Ordering: Ordering(9)},
		{Topic: TopicOptions{Partitions: -1}},
		{Topic: TopicOptions{ReplicationFactor: -2}},
		{Topic: TopicOptions{MinInSyncReplicas: -2}},
		{Topic: TopicOptions{ReplicationFactor: 2, MinInSyncReplicas: 3}},
		{DeadLetterTopic: TopicOptions{ReplicationFactor: 1, MinInSyncReplicas: 2}},
		{CommitInterval: -time.Second},
		{SessionTimeout: time.Second, HeartbeatInterval: 2 * time.Second},
		{DeadLetterTopic: TopicOptions{Partitions: -1}},
		{ReadAheadBytes: -1},
		{HeartbeatInterval: time.Second, RebalanceTimeout: 2 * time.Second},
		// The options in effect (with the default HeartbeatInterval).
		ChannelOptions{RebalanceTimeout: 2 * time.Second}.withDefaults(),
	}
	for _, o := range bad {
		if err := o.Validate(); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if err := (ChannelOptions{HeartbeatInterval: time.Second, RebalanceTimeout: 3 * time.Second}).withDefaults().Validate(); err != nil {
		t.Errorf("a RebalanceTimeout of 3 heartbeats: %v", err)
	}
	d := ChannelOptions{}.withDefaults()
	if d.Ordering != PerKey || d.Topic.Partitions != DefaultPartitions || d.Topic.ReplicationFactor != DefaultReplicationFactor ||
		d.CommitInterval != DefaultCommitInterval || d.HeartbeatInterval >= d.SessionTimeout ||
		d.DeadLetterTopic.Partitions != DefaultPartitions || len(d.DeadLetterTopic.Configs) != 0 ||
		d.ReadAheadBytes != DefaultReadAheadBytes {
		t.Fatalf("defaults %+v", d)
	}
	// The dead-letter topic takes none of the channel topic's configs.
	c := ChannelOptions{Topic: TopicOptions{Configs: map[string]string{"cleanup.policy": "compact"}}}.withDefaults()
	if len(c.DeadLetterTopic.Configs) != 0 {
		t.Fatalf("dead-letter topic configs %v", c.DeadLetterTopic.Configs)
	}
	m := kit.Overlay(ChannelOptions{FromBeginning: true, Topic: TopicOptions{Partitions: 3, Configs: map[string]string{"a": "1"}}},
		ChannelOptions{Ordering: PerKey, Topic: TopicOptions{Configs: map[string]string{"b": "2"}}})
	if !m.FromBeginning || m.Ordering != PerKey || m.Topic.Partitions != 3 || len(m.Topic.Configs) != 2 {
		t.Fatalf("merge %+v", m)
	}
}

func TestSendOptions(t *testing.T) {
	o, err := broker.NewPublishOptions(WithKey("k"), WithPartition(2), WithAcks(AcksLeader), WithCompression(Zstd), WithTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	so, ok := sendOptions(o.AdapterOptions)
	if !ok || string(so.Key) != "k" || so.Partition == nil || *so.Partition != 2 || so.Acks != AcksLeader ||
		so.Compression != Zstd || so.Timeout != time.Second {
		t.Fatalf("%+v", so)
	}
	for _, bad := range []SendOptions{{Partition: func() *int { p := -1; return &p }()}, {Acks: Acks(7)}, {Compression: Compression(9)}, {Timeout: -1}} {
		if err := bad.validate(); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := prepare(&broker.Outgoing{Options: broker.PublishOptions{AdapterOptions: []any{struct{}{}}}}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("a foreign send option: %v", err)
	}
}

func TestHeaders(t *testing.T) {
	h, err := fromKafkaHeaders(toKafkaHeaders(map[string]string{"a": "1", broker.HeaderRedeliveredCount: "2"}))
	if err != nil || h["a"] != "1" || failedRuns(h) != 2 {
		t.Fatalf("%v %v", h, err)
	}
	for _, v := range []string{"-1", "x", ""} {
		if failedRuns(map[string]string{broker.HeaderRedeliveredCount: v}) != 0 {
			t.Errorf("%q counts failed runs", v)
		}
	}
	if failedRuns(map[string]string{broker.HeaderRedeliveredCount: "99999999999"}) > 1<<20 {
		t.Errorf("an absurd count is not capped")
	}
	if _, ok := notBefore(map[string]string{HeaderNotBefore: "nope"}); ok {
		t.Errorf("a bad not-before is read")
	}
}

func TestHeadersBounded(t *testing.T) {
	many := make([]kafkago.Header, broker.MaxHeaders+1)
	for i := range many {
		many[i] = kafkago.Header{Key: fmt.Sprintf("k%d", i)}
	}
	if _, err := fromKafkaHeaders(many); !errors.Is(err, broker.ErrMalformed) {
		t.Fatalf("%d headers: %v", len(many), err)
	}
	first, err := fromKafkaHeaders([]kafkago.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}})
	if err != nil || first["a"] != "1" {
		t.Fatalf("a repeated key: %v %v", first, err)
	}
	big := map[string]string{"k": strings.Repeat("v", broker.MaxHeadersSize)}
	if _, err := fromKafkaHeaders(toKafkaHeaders(big)); !errors.Is(err, broker.ErrMalformed) {
		t.Fatalf("a header over the size limit: %v", err)
	}
}

// WithTransport's transport is copied: TLS, SASL and the client id of the
// adapter fill the copy, never the caller's value.
func TestWithTransportKeepsTheCallersValue(t *testing.T) {
	mine := &kafkago.Transport{DialTimeout: 3 * time.Second}
	a, err := New("kafka://u:secret@127.0.0.1:1?tls=true", WithTransport(mine, nil), WithClientID("me"))
	if err != nil {
		t.Fatal(err)
	}
	tr := a.newTransport()
	if mine.TLS != nil || mine.SASL != nil || mine.ClientID != "" {
		t.Fatalf("the caller's transport was changed: %+v", mine)
	}
	if tr == mine || tr.TLS == nil || tr.SASL == nil || tr.DialTimeout != 3*time.Second || tr.ClientID != "me" {
		t.Fatalf("the adapter's transport: %+v", tr)
	}
}

// SASL PLAIN over a connection without TLS is warned about at Connect.
func TestPlainSASLWithoutTLSWarns(t *testing.T) {
	for _, c := range []struct {
		url  string
		warn bool
	}{{"kafka://u:secret@127.0.0.1:1", true}, {"kafka+ssl://u:secret@127.0.0.1:1", false},
		{"kafka://u:secret@127.0.0.1:1?sasl=scram-sha-512", false}} {
		var buf strings.Builder
		a, err := New(c.url)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = a.Connect(ctx, broker.Env{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		cancel()
		if got := strings.Contains(buf.String(), "SASL PLAIN without TLS"); got != c.warn {
			t.Errorf("%s: warned %v, want %v (%s)", c.url, got, c.warn, buf.String())
		}
		if strings.Contains(buf.String(), "secret") {
			t.Errorf("%s: the log shows the password", c.url)
		}
	}
}

// A failed Connect says so (and still wraps ErrNotConnected).
func TestConnectFailedError(t *testing.T) {
	a, err := New("kafka://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = a.Connect(ctx, broker.Env{})
	if !errors.Is(err, broker.ErrNotConnected) || !strings.Contains(err.Error(), "connect failed") || strings.Contains(err.Error(), "not connected") {
		t.Fatalf("connect error %q", err)
	}
}

// The adapter tells its message size limit, under the broker's default.
func TestLimits(t *testing.T) {
	a, _ := New(DefaultURL)
	var l broker.Limiter = a
	if m := l.Limits().MaxMessageBytes; m <= 0 || m > 1048588-128 {
		t.Fatalf("MaxMessageBytes %d", m)
	}
}

// A password with an unescaped "#", "/", "?" or "@" is refused without
// being shown; a percent-encoded one is accepted and never displayed.
func TestURLPasswordsNeverShown(t *testing.T) {
	for _, raw := range []string{"kafka://u:123#abc@h:9092", "kafka://u:12/3@h:9092"} {
		_, display, _, _, err := parseURL(raw)
		if !errors.Is(err, broker.ErrInvalidOption) || strings.Contains(err.Error(), "123") {
			t.Fatalf("%s: display %q, error %v", raw, display, err)
		}
	}
	_, display, _, _, err := parseURL("kafka://u:123%23abc@h:9092,k:9093")
	if err != nil || strings.Contains(display, "123") {
		t.Fatalf("display %q, error %v", display, err)
	}
}

func TestTopicReplication(t *testing.T) {
	cases := []struct {
		name    string
		o       TopicOptions
		brokers int
		rf      int
		minISR  string // "" : not set (the broker's)
	}{
		{"single broker", TopicOptions{}, 1, 1, ""},
		{"two brokers", TopicOptions{}, 2, 2, ""},
		{"three brokers", TopicOptions{}, 3, 3, "2"},
		{"never above three", TopicOptions{}, 7, 3, "2"},
		{"no broker in the metadata", TopicOptions{}, 0, 1, ""},
		{"the broker's factor", TopicOptions{ReplicationFactor: BrokerReplicationFactor}, 0, -1, ""},
		{"explicit factor", TopicOptions{ReplicationFactor: 5}, 0, 5, "2"},
		{"explicit min ISR", TopicOptions{MinInSyncReplicas: 3}, 3, 3, "3"},
		{"the broker's min ISR", TopicOptions{MinInSyncReplicas: -1}, 3, 3, ""},
		{"min ISR in Configs wins", TopicOptions{MinInSyncReplicas: 3, Configs: map[string]string{"min.insync.replicas": "1"}}, 3, 3, "1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(c.o.Configs)
			rf, configs := topicReplication(c.o, c.brokers)
			if rf != c.rf || configs["min.insync.replicas"] != c.minISR {
				t.Fatalf("got rf %d, min.insync.replicas %q; want %d, %q", rf, configs["min.insync.replicas"], c.rf, c.minISR)
			}
			if len(c.o.Configs) != before {
				t.Fatalf("the options' Configs were modified: %v", c.o.Configs)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	in := []string{"a:9092", "b:9092", "c:9092"}
	got := rotate(in)
	if strings.Join(got, ",") != "b:9092,c:9092,a:9092" || in[0] != "a:9092" {
		t.Fatalf("rotate(%v) = %v", in, got)
	}
	if got := rotate(rotate(got)); strings.Join(got, ",") != "a:9092,b:9092,c:9092" {
		t.Fatalf("three rotations: %v", got)
	}
}
