package kit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

// A dead letter the broker refuses on every delivery ends, after
// MaxDeliveries refusals, as a drop with ErrDeadLetterRefused: never a loop.
func TestRefusedDeadLetterEndsAfterMaxDeliveries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dlErr      error
		wantDrop   bool
		deliveries int
		slowClock  bool // 10 s a delivery against a 45 s window: the drop waits for it
	}{
		{name: "refused", dlErr: errors.New("nats: invalid header"), wantDrop: true, deliveries: 3},
		{name: "refused, the window not over", dlErr: errors.New("nats: invalid header"), wantDrop: true, deliveries: 5, slowClock: true},
		{name: "a kafka error that is not temporary", dlErr: fakeKafkaErr{temporary: false}, wantDrop: true, deliveries: 3},
		{name: "a kafka error that is temporary", dlErr: fakeKafkaErr{temporary: true}, wantDrop: false},
		{name: "too large even trimmed", dlErr: nil, wantDrop: true, deliveries: 3},
		{name: "transient: never counted", dlErr: fmt.Errorf("publish: %w", syscall.ECONNREFUSED), wantDrop: false, deliveries: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1,
				Retry:      broker.RetryPolicy{MaxRetries: 0, Backoff: broker.ConstantBackoff(time.Millisecond), MaxDeliveries: 3},
				DeadLetter: broker.DeadLetterPolicy{Enabled: true, Queue: "DLQ", RefusalWindow: time.Nanosecond},
				Handler:    func(context.Context, *broker.Message) error { return errors.New("line one\nline two") }}
			payload := []byte(`"x"`)
			if tc.dlErr == nil {
				// The payload alone is over the broker's message size.
				ch.Limits = broker.Limits{MaxMessageBytes: 100}
				payload = []byte(`"` + strings.Repeat("p", 200) + `"`)
			}
			now := time.Unix(1e9, 0)
			if tc.slowClock {
				ch.DeadLetter.RefusalWindow = 45 * time.Second
				ch.Now = func() time.Time { return now }
			}
			ch.Normalize()
			if err := ch.Validate(); err != nil {
				t.Fatal(err)
			}
			var failure map[string]string
			final := false
			dlCalls := 0
			for n := 1; n <= 10; n++ {
				now = now.Add(10 * time.Second)
				s := &settled{dlqErr: tc.dlErr}
				msg := broker.NewMessage(nil)
				msg.Channel, msg.Group, msg.ID, msg.Attempt, msg.Payload = "c", "g", "1-0", 1, payload
				d := &kit.Delivery{Msg: msg, Deliveries: n, Final: final, Failure: failure, Settle: s}
				out := kit.Deliver(context.Background(), ch, d)
				dlCalls += strings.Count(s.got(), "dead-letter")
				if out.Action == broker.Drop {
					if !tc.wantDrop {
						t.Fatalf("dropped at delivery %d after transient failures", n)
					}
					if !errors.Is(out.Err, broker.ErrDeadLetterRefused) {
						t.Fatalf("drop cause %v, want ErrDeadLetterRefused", out.Err)
					}
					if n != tc.deliveries+1 {
						t.Fatalf("dropped at delivery %d, want %d", n, tc.deliveries+1)
					}
					if s.got() != "ack" {
						t.Fatalf("the drop settled %q, want an ack", s.got())
					}
					return
				}
				if !strings.HasSuffix(s.got(), "keep") {
					t.Fatalf("delivery %d settled %q, want a keep", n, s.got())
				}
				if strings.ContainsAny(s.failure[broker.HeaderErrorMessage], "\r\n") {
					t.Fatalf("kept error message has a line break: %q", s.failure[broker.HeaderErrorMessage])
				}
				final, failure = true, s.failure
			}
			if tc.wantDrop {
				t.Fatalf("never dropped after 10 deliveries (%d dead-letter publishes)", dlCalls)
			}
			if failure[broker.HeaderDeadLetterRefusals] != "0" {
				t.Fatalf("transient failures counted: %v", failure[broker.HeaderDeadLetterRefusals])
			}
		})
	}
}

func TestLimitsFitTrimsErrorHeaders(t *testing.T) {
	l := broker.Limits{MaxHeaderBytes: 4096}
	h := map[string]string{"x-error-message": strings.Repeat("m", 10000), "x-error-stack": strings.Repeat("s", 10000),
		"x-original-channel": "c", "user": "kept"}
	out, ok := l.Fit(0, h)
	if !ok {
		t.Fatal("did not fit")
	}
	if broker.HeaderBytes(out) > 4096 {
		t.Fatalf("%d bytes over 4096", broker.HeaderBytes(out))
	}
	if _, has := out["x-error-stack"]; has {
		t.Fatal("stack kept")
	}
	if out["user"] != "kept" || out["x-original-channel"] != "c" || out[broker.HeaderErrorTrimmed] != "x-error-stack,x-error-message" {
		t.Fatalf("headers %v", out)
	}
	if len(h["x-error-stack"]) != 10000 {
		t.Fatal("the input was changed")
	}
	if _, ok := (broker.Limits{MaxMessageBytes: 100}).Fit(200, map[string]string{}); ok {
		t.Fatal("a payload over the message limit fit")
	}
}

func TestEscapeLineBreaks(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"a\nb":           `a\nb`,
		"a\r\nb\tc\\d":   `a\r\nb\tc\d`,
		"nul\x00del\x7f": `nul\x00del\x7f`,
		"ünïcode":        "ünïcode",
	} {
		if got := broker.EscapeLineBreaks(in); got != want {
			t.Errorf("EscapeLineBreaks(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeKafkaErr stands for kafka-go's Error: it has Timeout and Temporary.
type fakeKafkaErr struct{ temporary bool }

func (e fakeKafkaErr) Error() string   { return "[10] Message Size Too Large" }
func (e fakeKafkaErr) Timeout() bool   { return false }
func (e fakeKafkaErr) Temporary() bool { return e.temporary }

// A retry copy's failure is fitted beside the message's own headers, not
// beside the x-error-* headers of the run before (which it replaces): a
// second retry of a 200 KB error is cut like the first.
func TestRetryFailureFittedBesideTheOwnHeadersOnly(t *testing.T) {
	big := strings.Repeat("e", 200<<10)
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Limits: broker.Limits{MaxHeaderBytes: 128 << 10},
		Retry:   broker.RetryPolicy{MaxRetries: 3, Backoff: broker.ConstantBackoff(time.Millisecond)},
		Handler: func(context.Context, *broker.Message) error { return errors.New(big) }}
	ch.Normalize()
	s := &settled{}
	msg := broker.NewMessage(nil)
	msg.Channel, msg.Group, msg.ID, msg.Attempt = "c", "g", "1-0", 2
	msg.Headers = map[string]string{"user": "kept", broker.HeaderErrorMessage: big, broker.HeaderErrorStack: big}
	kit.Deliver(context.Background(), ch, &kit.Delivery{Msg: msg, Settle: s})
	if s.got() != "retry" {
		t.Fatalf("settled %q", s.got())
	}
	m := s.failure[broker.HeaderErrorMessage]
	if len(m) < 100<<10 || len(m) > 128<<10 || s.failure[broker.HeaderErrorTrimmed] == "headers" {
		t.Fatalf("failure message of %d bytes, trimmed %q: want it cut to fit beside the own headers", len(m), s.failure[broker.HeaderErrorTrimmed])
	}
}
