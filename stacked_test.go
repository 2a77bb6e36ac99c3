package channels_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go-micro.dev/v4"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
	_ "github.com/microchannels/channels/redis"
)

type stackedSchema struct {
	Channels      channels.Channels
	AuditChannels channels.Channels
	SendToChannel channels.SendFunc
	SendToAudit   channels.SendFunc
}

// TestStackedStartFailureDisconnects: go-micro stops at the first failing
// BeforeStart and runs no stop hook; the plugin whose start failed stops
// the plugins of the service that had connected, so nothing stays connected
// and Run can be tried again.
func TestStackedStartFailureDisconnects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	first, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens on port 1: connecting fails at once.
	second, err := channels.New(channels.WithAdapter("redis://127.0.0.1:1"), channels.WithTimeouts(300*time.Millisecond, 0, 0),
		channels.WithSchemaProperty("AuditChannels"), channels.WithSendMethodName("SendToAudit"))
	if err != nil {
		t.Fatal(err)
	}
	s := &stackedSchema{Channels: channels.Channels{"events": noop}, AuditChannels: channels.Channels{"audit": noop}}
	svc := microService(ctx, "stacked", "", first.Install(s), second.Install(s))
	err = svc.Run()
	if err == nil {
		t.Fatal("Run succeeded with an unreachable broker")
	}
	if err := s.SendToChannel(ctx, "events", 1); !errors.Is(err, channels.ErrClosed) && !errors.Is(err, channels.ErrNotConnected) {
		t.Fatalf("the first plugin is still connected after the failed Run: send = %v", err)
	}
	err = svc.Run()
	if err == nil || errors.Is(err, channels.ErrAlreadyStarted) {
		t.Fatalf("second Run = %v, want the connect error again", err)
	}
	if err := s.SendToChannel(ctx, "events", 1); !errors.Is(err, channels.ErrClosed) && !errors.Is(err, channels.ErrNotConnected) {
		t.Fatalf("the first plugin is still connected after the second failed Run: send = %v", err)
	}
}

type stackedWithTrigger struct {
	stackedSchema
	EmitLocalChannelHandler channels.TriggerFunc
}

// TestStackedConflicts: two plugins of one service conflict only on a
// field that exists in a schema they share; the error names the option to
// change, and no plugin connects.
func TestStackedConflicts(t *testing.T) {
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	audit := []channels.Option{channels.WithSchemaProperty("AuditChannels"), channels.WithSendMethodName("SendToAudit")}
	tests := []struct {
		name       string
		schema     func() any
		secondOpts []channels.Option
		wantErr    error
		wantOption string
	}{
		{"no trigger field: both plugins keep the default trigger name", func() any {
			return &stackedSchema{Channels: channels.Channels{"e": noop}, AuditChannels: channels.Channels{"a": noop}}
		}, audit, nil, ""},
		{"the trigger field exists", func() any {
			return &stackedWithTrigger{stackedSchema: stackedSchema{Channels: channels.Channels{"e": noop}, AuditChannels: channels.Channels{"a": noop}}}
		}, audit, channels.ErrDuplicateProperty, "WithChannelHandlerTrigger"},
		{"one schema property", func() any {
			return &stackedSchema{Channels: channels.Channels{"e": noop}}
		}, []channels.Option{channels.WithSendMethodName("SendToAudit")}, channels.ErrDuplicateProperty, "WithSchemaProperty"},
		{"one send field", func() any {
			return &stackedSchema{Channels: channels.Channels{"e": noop}, AuditChannels: channels.Channels{"a": noop}}
		}, []channels.Option{channels.WithSchemaProperty("AuditChannels")}, channels.ErrDuplicateProperty, "WithSendMethodName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
			if err != nil {
				t.Fatal(err)
			}
			second, err := channels.New(append([]channels.Option{channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus())))}, tt.secondOpts...)...)
			if err != nil {
				t.Fatal(err)
			}
			s := tt.schema()
			started := make(chan struct{})
			svc := microService(ctx, "stacked", "", first.Install(s), second.Install(s), micro.AfterStart(func() error { close(started); return nil }))
			done := make(chan error, 1)
			go func() { done <- svc.Run() }()
			select {
			case <-started:
				if tt.wantErr != nil {
					t.Fatal("Run started")
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			case err := <-done:
				if !errors.Is(err, tt.wantErr) || tt.wantErr == nil {
					t.Fatalf("Run = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantOption) {
					t.Fatalf("the error does not name %s: %v", tt.wantOption, err)
				}
				if err := first.SendToChannel(ctx, "e", 1); !errors.Is(err, channels.ErrNotConnected) {
					t.Fatalf("the first plugin connected: send = %v", err)
				}
			}
		})
	}
}
