package hooks_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// Logging logs at the levels its logger enables, and a delivery whose line
// is filtered out costs no allocation.
func TestLoggingLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	info := hooks.Info{Channel: "orders", Group: "g"}
	boom := errors.New("boom")
	var fail bool
	h := hooks.ChainHandler(func(context.Context, *broker.Message) error {
		if fail {
			return boom
		}
		return nil
	}, info, []hooks.Interceptor{hooks.Logging(l)})
	ctx := context.Background()
	msg := &broker.Message{Channel: "orders", Group: "g", ID: "7", Attempt: 2}

	if n := testing.AllocsPerRun(100, func() { _ = h(ctx, msg) }); n != 0 {
		t.Errorf("a filtered success line allocates %v times, want 0", n)
	}
	if buf.Len() != 0 {
		t.Fatalf("debug line written at level info: %q", buf.String())
	}
	fail = true
	if err := h(ctx, msg); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"level=WARN", "channels: handler failed", "channel=orders", "group=g", "id=7", "attempt=2", "took=", "error=boom"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("warn line %q lacks %q", buf.String(), want)
		}
	}

	buf.Reset()
	dl := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fail = false
	if err := hooks.ChainHandler(func(context.Context, *broker.Message) error { return nil }, info,
		[]hooks.Interceptor{hooks.Logging(dl)})(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "level=DEBUG") || !strings.Contains(buf.String(), "channels: handled") {
		t.Errorf("debug line missing: %q", buf.String())
	}

	buf.Reset()
	send := hooks.ChainSend(func(context.Context, string, any, ...broker.PublishOption) error { return boom }, []hooks.Interceptor{hooks.Logging(l)})
	if err := send(ctx, "orders", 1); !errors.Is(err, boom) {
		t.Fatalf("send err = %v", err)
	}
	if !strings.Contains(buf.String(), "channels: send failed") {
		t.Errorf("send warn line missing: %q", buf.String())
	}
}

// Logging redacts the credentials an error carries, on deliveries, sends
// and batch sends.
func TestLoggingRedactsCredentials(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	leak := errors.New("dial redis://app:s3cret@10.0.0.7:6379/0: connection refused")
	ctx := context.Background()
	h := hooks.ChainHandler(func(context.Context, *broker.Message) error { return leak },
		hooks.Info{Channel: "orders", Group: "g"}, []hooks.Interceptor{hooks.Logging(l)})
	if err := h(ctx, &broker.Message{ID: "1", Attempt: 1}); !errors.Is(err, leak) {
		t.Fatalf("the handler's error must pass unchanged, got %v", err)
	}
	send := hooks.ChainSend(func(context.Context, string, any, ...broker.PublishOption) error { return leak },
		[]hooks.Interceptor{hooks.Logging(l)})
	if err := send(ctx, "orders", 1); !errors.Is(err, leak) {
		t.Fatalf("the send's error must pass unchanged, got %v", err)
	}
	batch := hooks.ChainSendBatch(func(context.Context, string, []hooks.BatchItem, ...broker.PublishOption) []error {
		return []error{leak}
	}, []hooks.Interceptor{hooks.Logging(l)})
	if errs := batch(ctx, "orders", []hooks.BatchItem{{Payload: 1}}); len(errs) != 1 || !errors.Is(errs[0], leak) {
		t.Fatalf("the batch's errors must pass unchanged, got %v", errs)
	}
	out := buf.String()
	if strings.Contains(out, "s3cret") || strings.Count(out, "10.0.0.7:6379") != 3 {
		t.Fatalf("log lines leak the password or lost the address:\n%s", out)
	}
}
