package broker_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

type CodedErr struct{}

func (CodedErr) Error() string   { return "coded" }
func (CodedErr) Code() string    { return "E42" }
func (CodedErr) Type() string    { return "VALIDATION" }
func (CodedErr) Data() any       { return map[string]int{"field": 3} }
func (CodedErr) Retryable() bool { return false }

func TestErrorHeadersRoundTrip(t *testing.T) {
	now := time.UnixMilli(1700000000123)
	h := broker.ErrorToHeaders(fmt.Errorf("wrap: %w", CodedErr{}), now)
	want := map[string]string{
		"x-error-message": "wrap: coded", "x-error-name": "CodedErr", "x-error-code": "E42",
		"x-error-type": "VALIDATION", "x-error-retryable": "false", "x-error-timestamp": "1700000000123",
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	if d, _ := base64.StdEncoding.DecodeString(h["x-error-data"]); string(d) != `{"field":3}` {
		t.Errorf("data = %q", d)
	}
	e := broker.ErrorFromHeaders(h)
	if e == nil || e.Message != "wrap: coded" || e.Code != "E42" || e.Retryable == nil || *e.Retryable || !e.Timestamp.Equal(now) {
		t.Fatalf("decoded %+v", e)
	}
	if !strings.Contains(e.Stack, "wrap: coded") {
		t.Errorf("stack %q", e.Stack)
	}
	if broker.ErrorToHeaders(nil, now) != nil || broker.ErrorFromHeaders(map[string]string{"a": "b"}) != nil {
		t.Error("nil cases")
	}
}

func TestErrorName(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("x"), "Error"},
		{"wrapped plain", fmt.Errorf("a: %w", errors.New("x")), "Error"},
		{"typed", &broker.DecodeError{Err: errors.New("x")}, "DecodeError"},
		{"permanent typed", broker.Permanent(&broker.PanicError{Value: 1}), "PanicError"},
		{"context", context.DeadlineExceeded, "Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := broker.ErrorName(tt.err); got != tt.want {
				t.Fatalf("ErrorName = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeadLetterHeaders(t *testing.T) {
	msg := &broker.Message{Channel: "ns.orders", Group: "g", ID: "1-0", Attempt: 3,
		Headers: map[string]string{"k": "v", "x-group": "g", "x-error-message": "old", "$meta": "!!"}}
	h := broker.DeadLetterHeaders(msg, &broker.DecodeError{Field: "$meta", Err: errors.New("bad")}, time.Now())
	for k, v := range map[string]string{"k": "v", "x-original-channel": "ns.orders", "x-original-group": "g",
		"x-original-id": "1-0", "x-redelivered-count": "2", "x-original-$meta": "!!", "x-error-name": "DecodeError"} {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	for _, gone := range []string{"x-group", "$meta"} {
		if _, ok := h[gone]; ok {
			t.Errorf("%s kept", gone)
		}
	}
	if msg.Headers["x-group"] != "g" {
		t.Error("original headers mutated")
	}
}

func TestExponentialBackoff(t *testing.T) {
	b := broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}
	for attempt, want := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 100 * time.Millisecond,
		2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		if got := b.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestChannelValidate(t *testing.T) {
	ok := func() *broker.Channel {
		c := &broker.Channel{Name: "c", Group: "g", Handler: func(context.Context, *broker.Message) error { return nil }}
		c.Normalize()
		return c
	}
	tests := []struct {
		name   string
		mutate func(*broker.Channel)
	}{
		{"no name", func(c *broker.Channel) { c.Name = "" }},
		{"no group", func(c *broker.Channel) { c.Group = "" }},
		{"no handler", func(c *broker.Channel) { c.Handler = nil }},
		{"max in flight", func(c *broker.Channel) { c.MaxInFlight = -1 }},
		{"negative retries", func(c *broker.Channel) { c.Retry.MaxRetries = -2 }},
		{"dlq without queue", func(c *broker.Channel) { c.DeadLetter.Enabled = true }},
	}
	if err := ok().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mutate(c)
			if err := c.Validate(); !errors.Is(err, broker.ErrInvalidOption) {
				t.Fatalf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	for _, s := range []string{"", "nosuchadapter", "nosuch://host", "://bad"} {
		if _, err := broker.Resolve(s); !errors.Is(err, broker.ErrUnknownAdapter) {
			t.Errorf("Resolve(%q) = %v, want ErrUnknownAdapter", s, err)
		}
	}
}

func TestRedact(t *testing.T) {
	got := broker.Redact(`dial redis://user:secret@host:6379/0 failed`)
	if strings.Contains(got, "secret") || !strings.Contains(got, "user:xxxxx@host") {
		t.Fatalf("Redact = %q", got)
	}
}

func TestSerializers(t *testing.T) {
	type payload struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	for _, s := range []broker.Serializer{broker.JSON{}, broker.MsgPack{}} {
		b, err := s.Marshal(payload{1, "a"})
		if err != nil {
			t.Fatal(err)
		}
		var back payload
		if err := s.Unmarshal(b, &back); err != nil || back != (payload{1, "a"}) {
			t.Fatalf("%s: %v %+v", s.Name(), err, back)
		}
		var generic map[string]any
		if err := s.Unmarshal(b, &generic); err != nil || generic["name"] != "a" {
			t.Fatalf("%s generic: %v %v", s.Name(), err, generic)
		}
	}
	var out string
	if err := (broker.Raw{}).Unmarshal([]byte("x"), &out); err != nil || out != "x" {
		t.Fatal(err)
	}
	if _, err := (broker.Raw{}).Marshal(1); err == nil {
		t.Fatal("raw accepted an int")
	}
	if _, err := broker.SerializerByName("yaml"); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatal(err)
	}
}

func TestMessageDecodeError(t *testing.T) {
	m := broker.NewMessage(broker.JSON{})
	m.Payload, m.ID, m.Channel = []byte("{"), "7", "c"
	var v map[string]any
	err := m.Decode(&v)
	var de *broker.DecodeError
	if !errors.Is(err, broker.ErrDecode) || !errors.As(err, &de) || de.Field != "payload" || !broker.IsPoison(err) {
		t.Fatalf("err = %v", err)
	}
}
