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

func TestDecide(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		retries int
		dlq     bool
		attempt int
		err     error
		want    broker.Action
	}{
		{"success", 3, true, 1, nil, broker.Ack},
		{"first failure retried", 3, true, 1, boom, broker.Retry},
		{"last retry retried", 3, true, 3, boom, broker.Retry},
		{"after last retry to DLQ", 3, true, 4, boom, broker.DeadLetter},
		{"after last retry dropped", 3, false, 4, boom, broker.Drop},
		{"no retries", 0, true, 1, boom, broker.DeadLetter},
		{"poison not retried", 3, true, 1, &broker.DecodeError{Err: boom}, broker.DeadLetter},
		{"permanent not retried", 3, false, 1, broker.Permanent(boom), broker.Drop},
		{"not retryable", 3, true, 1, CodedErr{}, broker.DeadLetter},
		{"attempt 0 counts as 1", 1, true, 0, boom, broker.Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil },
				Retry:      broker.RetryPolicy{MaxRetries: tt.retries, Backoff: broker.ConstantBackoff(time.Second)},
				DeadLetter: broker.DeadLetterPolicy{Enabled: tt.dlq, Queue: "DLQ"}}
			c.Normalize()
			out := c.Decide(&broker.Message{Attempt: tt.attempt}, tt.err)
			if out.Action != tt.want {
				t.Fatalf("action = %v, want %v", out.Action, tt.want)
			}
			if out.Action == broker.Retry && out.Delay != time.Second {
				t.Fatalf("delay = %v", out.Delay)
			}
			if out.Action == broker.DeadLetter && out.Headers["x-error-message"] == "" {
				t.Fatal("no error headers")
			}
		})
	}
}

func TestDeliverRecoversPanics(t *testing.T) {
	c := &broker.Channel{Name: "c", Group: "g", Retry: broker.RetryPolicy{MaxRetries: 1},
		Handler: func(context.Context, *broker.Message) error { panic("kaboom") }}
	c.Normalize()
	out := c.Deliver(context.Background(), &broker.Delivery{Msg: &broker.Message{Attempt: 1}, Settle: &settled{}})
	var pe *broker.PanicError
	if out.Action != broker.Retry || !errors.As(out.Err, &pe) || pe.Value != "kaboom" || len(pe.Stack) == 0 {
		t.Fatalf("outcome %+v", out)
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

type sendOpt struct{ n int }

func (o sendOpt) Validate() error {
	if o.n < 0 {
		return fmt.Errorf("%w: n must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

func TestPublishOptions(t *testing.T) {
	o, err := broker.NewPublishOptions(broker.WithHeader("a", "1"), broker.WithRaw(), broker.WithAdapterOptions(sendOpt{3}))
	if err != nil || o.Headers["a"] != "1" || !o.Raw {
		t.Fatalf("%+v %v", o, err)
	}
	if v, ok := broker.SendOption[sendOpt](o); !ok || v.n != 3 {
		t.Fatalf("SendOption = %v %v", v, ok)
	}
	for _, bad := range []broker.PublishOption{broker.WithAdapterOptions(sendOpt{-1}), broker.WithHeaders(map[string]string{"": "x"})} {
		if _, err := broker.NewPublishOptions(bad); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("err = %v", err)
		}
	}
	known := func(v any) bool { _, ok := v.(sendOpt); return ok }
	if err := broker.CheckOptions("test", o.AdapterOptions, known); err != nil {
		t.Fatal(err)
	}
	err = broker.CheckOptions("test", []any{sendOpt{}, 42}, known)
	if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "int") {
		t.Fatalf("unknown option: %v", err)
	}
}

type chOpt struct{ n int }

func (o chOpt) Validate() error {
	if o.n < 0 {
		return fmt.Errorf("%w: n must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

func TestPrepareChannel(t *testing.T) {
	merge := func(base, over chOpt) chOpt { base.n += over.n; return base }
	ch := func(opts ...any) *broker.Channel {
		return &broker.Channel{Name: "c", Group: "g", AdapterOptions: opts,
			Handler: func(context.Context, *broker.Message) error { return nil }}
	}
	got, err := broker.PrepareChannel(ch(&chOpt{2}), "test", chOpt{1}, merge, nil)
	if err != nil || got.n != 3 {
		t.Fatalf("merged %v, %v", got, err)
	}
	for name, c := range map[string]*broker.Channel{"foreign type": ch(42), "invalid value": ch(chOpt{-1}),
		"invalid channel": {Name: "c", Group: "g"}} {
		if _, err := broker.PrepareChannel(c, "test", chOpt{}, merge, nil); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Defaults apply after the merge, and their result is validated.
	got, err = broker.PrepareChannel(ch(), "test", chOpt{}, merge, func(o chOpt) chOpt { o.n += 10; return o })
	if err != nil || got.n != 10 {
		t.Fatalf("defaults %v, %v", got, err)
	}
	if _, err := broker.PrepareChannel(ch(), "test", chOpt{}, merge, func(o chOpt) chOpt { o.n = -1; return o }); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("invalid defaults: %v", err)
	}
}

func TestApplyOptions(t *testing.T) {
	type target struct{ n int }
	type opt func(*target) error
	boom := errors.New("boom")
	var tg target
	if err := broker.ApplyOptions(&tg, []opt{func(t *target) error { t.n++; return nil }, nil, func(t *target) error { t.n++; return nil }}); err != nil || tg.n != 2 {
		t.Fatalf("%v %v", tg, err)
	}
	if err := broker.ApplyOptions(&tg, []opt{func(*target) error { return boom }, func(t *target) error { t.n = 99; return nil }}); !errors.Is(err, boom) || tg.n == 99 {
		t.Fatalf("the first error stops: %v %v", tg, err)
	}
}

func TestMergedOption(t *testing.T) {
	type so struct{ A, B string }
	merge := func(base, over so) so {
		if over.A != "" {
			base.A = over.A
		}
		if over.B != "" {
			base.B = over.B
		}
		return base
	}
	got, ok := broker.MergedOption([]any{so{A: "1"}, 42, (*so)(nil), &so{B: "2"}, so{A: "3"}}, merge)
	if !ok || got != (so{A: "3", B: "2"}) {
		t.Fatalf("%+v %v", got, ok)
	}
	if _, ok := broker.MergedOption([]any{"x"}, merge); ok {
		t.Fatal("found an option of another type")
	}
}
