package kit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/kit"
)

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
		{"not retryable", 3, true, 1, notRetryable{}, broker.DeadLetter},
		{"attempt 0 counts as 1", 1, true, 0, boom, broker.Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil },
				Retry:      broker.RetryPolicy{MaxRetries: tt.retries, Backoff: broker.ConstantBackoff(time.Second)},
				DeadLetter: broker.DeadLetterPolicy{Enabled: tt.dlq, Queue: "DLQ"}}
			c.Normalize()
			out := kit.Decide(c, &broker.Message{Attempt: tt.attempt}, tt.err)
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
	out := kit.Deliver(context.Background(), c, &kit.Delivery{Msg: &broker.Message{Attempt: 1}, Settle: &settled{}})
	var pe *broker.PanicError
	if out.Action != broker.Retry || !errors.As(out.Err, &pe) || pe.Value != "kaboom" || len(pe.Stack) == 0 {
		t.Fatalf("outcome %+v", out)
	}
}

func TestPrepareChannel(t *testing.T) {
	merge := func(base, over chOpt) chOpt { base.n += over.n; return base }
	ch := func(opts ...any) *broker.Channel {
		return &broker.Channel{Name: "c", Group: "g", AdapterOptions: opts,
			Handler: func(context.Context, *broker.Message) error { return nil }}
	}
	got, err := kit.PrepareChannel(ch(&chOpt{2}), "test", chOpt{1}, merge, nil)
	if err != nil || got.n != 3 {
		t.Fatalf("merged %v, %v", got, err)
	}
	for name, c := range map[string]*broker.Channel{"foreign type": ch(42), "invalid value": ch(chOpt{-1}),
		"invalid channel": {Name: "c", Group: "g"}} {
		if _, err := kit.PrepareChannel(c, "test", chOpt{}, merge, nil); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Defaults apply after the merge, and their result is validated.
	got, err = kit.PrepareChannel(ch(), "test", chOpt{}, merge, func(o chOpt) chOpt { o.n += 10; return o })
	if err != nil || got.n != 10 {
		t.Fatalf("defaults %v, %v", got, err)
	}
	if _, err := kit.PrepareChannel(ch(), "test", chOpt{}, merge, func(o chOpt) chOpt { o.n = -1; return o }); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("invalid defaults: %v", err)
	}
}

func TestApplyOptions(t *testing.T) {
	type target struct{ n int }
	type opt func(*target) error
	boom := errors.New("boom")
	var tg target
	if err := kit.ApplyOptions(&tg, []opt{func(t *target) error { t.n++; return nil }, nil, func(t *target) error { t.n++; return nil }}); err != nil || tg.n != 2 {
		t.Fatalf("%v %v", tg, err)
	}
	if err := kit.ApplyOptions(&tg, []opt{func(*target) error { return boom }, func(t *target) error { t.n = 99; return nil }}); !errors.Is(err, boom) || tg.n == 99 {
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
	got, ok := kit.MergedOption([]any{so{A: "1"}, 42, (*so)(nil), &so{B: "2"}, so{A: "3"}}, merge)
	if !ok || got != (so{A: "3", B: "2"}) {
		t.Fatalf("%+v %v", got, ok)
	}
	if _, ok := kit.MergedOption([]any{"x"}, merge); ok {
		t.Fatal("found an option of another type")
	}
}

func TestPublishOptions(t *testing.T) {
	o, err := broker.NewPublishOptions(broker.WithHeader("a", "1"), broker.WithRaw(), broker.WithAdapterOptions(sendOpt{3}))
	if err != nil || o.Headers["a"] != "1" || !o.Raw {
		t.Fatalf("%+v %v", o, err)
	}
	if v, ok := kit.SendOption[sendOpt](o); !ok || v.n != 3 {
		t.Fatalf("SendOption = %v %v", v, ok)
	}
	for _, bad := range []broker.PublishOption{broker.WithAdapterOptions(sendOpt{-1}), broker.WithHeaders(map[string]string{"": "x"})} {
		if _, err := broker.NewPublishOptions(bad); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("err = %v", err)
		}
	}
	known := func(v any) bool { _, ok := v.(sendOpt); return ok }
	if err := kit.CheckOptions("test", o.AdapterOptions, known); err != nil {
		t.Fatal(err)
	}
	err = kit.CheckOptions("test", []any{sendOpt{}, 42}, known)
	if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "int") {
		t.Fatalf("unknown option: %v", err)
	}
}

type sendOpt struct{ n int }

func (o sendOpt) Validate() error {
	if o.n < 0 {
		return fmt.Errorf("%w: n must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

type chOpt struct{ n int }

func (o chOpt) Validate() error {
	if o.n < 0 {
		return fmt.Errorf("%w: n must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

// notRetryable is an error that says it will never succeed.
type notRetryable struct{}

func (notRetryable) Error() string   { return "not retryable" }
func (notRetryable) Retryable() bool { return false }
