package channels_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go-micro.dev/v4"
	mbroker "go-micro.dev/v4/broker"
	"go-micro.dev/v4/logger"
	"go-micro.dev/v4/metadata"
	"go-micro.dev/v4/registry"
	"go-micro.dev/v4/server"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

func init() {
	logger.DefaultLogger = logger.NewLogger(logger.WithLevel(logger.ErrorLevel))
}

func microService(ctx context.Context, name, version string, opts ...micro.Option) micro.Service {
	reg := registry.NewMemoryRegistry()
	srv := server.NewServer(server.Name(name), server.Version(version), server.Id(uuid.NewString()),
		server.Address("127.0.0.1:0"), server.Registry(reg))
	base := []micro.Option{micro.Server(srv), micro.Registry(reg), micro.Broker(mbroker.NewMemoryBroker()),
		micro.Context(ctx), micro.HandleSignal(false)}
	return micro.NewService(append(base, opts...)...)
}

type payments struct {
	Channels       channels.Channels
	SendToChannel  channels.SendFunc
	ChannelAdapter broker.Adapter
}

func TestInstallLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bus := memory.NewBus()
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))))
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Pointer[broker.Message]
	var gotMD atomic.Value
	s := &payments{Channels: channels.Channels{"order.created": channels.On(func(ctx context.Context, m *channels.Message) error {
		md, _ := metadata.FromContext(ctx)
		gotMD.Store(md)
		got.Store(m)
		return nil
	})}}
	started := make(chan struct{})
	svc := microService(ctx, "payments", "2", p.Install(s), micro.AfterStart(func() error { close(started); return nil }))
	if s.ChannelAdapter != p.Adapter() || s.SendToChannel == nil {
		t.Fatal("fields not injected")
	}
	if err := s.SendToChannel(ctx, "order.created", 1); !errors.Is(err, channels.ErrNotConnected) {
		t.Fatalf("send before Run: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run() }()
	<-started
	mdCtx := metadata.NewContext(ctx, metadata.Metadata{"Tenant": "acme"})
	if err := s.SendToChannel(mdCtx, "order.created", map[string]int{"id": 1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return got.Load() != nil })
	if m := got.Load(); m.Group != "v2.payments" {
		t.Fatalf("default group = %q, want v2.payments", m.Group)
	}
	if v, _ := gotMD.Load().(metadata.Metadata).Get("Tenant"); v != "acme" {
		t.Fatalf("metadata not propagated: %v", gotMD.Load())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := s.SendToChannel(context.Background(), "order.created", 1); !errors.Is(err, channels.ErrClosed) {
		t.Fatalf("send after stop: %v", err)
	}
}

func TestInstallErrorsAbortRun(t *testing.T) {
	tests := []struct {
		name    string
		build   func() []micro.Option
		wantErr error
	}{
		{"missing handler", func() []micro.Option {
			p, _ := channels.New(channels.WithAdapter("memory://"))
			return []micro.Option{p.Install(&payments{Channels: channels.Channels{"x": {}}})}
		}, channels.ErrNoHandler},
		{"two plugins on one property", func() []micro.Option {
			p1, _ := channels.New(channels.WithAdapter("memory://"))
			p2, _ := channels.New(channels.WithAdapter("memory://"), channels.WithSendMethodName("SendToOther"))
			s := &payments{}
			return []micro.Option{p1.Install(s), p2.Install(s)}
		}, channels.ErrDuplicateProperty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var afterStart atomic.Bool
			opts := append(tt.build(), micro.AfterStart(func() error { afterStart.Store(true); return nil }))
			err := microService(ctx, "payments", "", opts...).Run()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run = %v, want %v", err, tt.wantErr)
			}
			if afterStart.Load() {
				t.Fatal("the server started")
			}
		})
	}
}

func TestFromSubscriberWrapper(t *testing.T) {
	var topic string
	w := func(next server.SubscriberFunc) server.SubscriberFunc {
		return func(ctx context.Context, msg server.Message) error {
			topic = msg.Topic()
			if string(msg.Body()) != "1" {
				return errors.New("body")
			}
			return next(ctx, msg)
		}
	}
	var handled bool
	s := &svc{Name: "s", Channels: channels.Channels{"c": channels.On(func(ctx context.Context, m *channels.Message) error {
		handled = true
		return nil
	})}}
	p, _ := channels.New(channels.WithAdapter("memory://wrapper"), channels.WithInterceptors(channels.FromSubscriberWrapper("w", w)))
	_ = p.Register(s)
	if err := s.EmitLocalChannelHandler(context.Background(), "c", 1); err != nil || !handled || topic != "c" {
		t.Fatalf("err %v handled %v topic %q", err, handled, topic)
	}
}

// TestServerSubWrappersWrapChannelHandlers: micro.WrapSubscriber wrappers
// of the service apply to channel handlers (inside the plugin's own
// interceptors), unless WithServerSubWrappers(false).
func TestServerSubWrappersWrapChannelHandlers(t *testing.T) {
	for _, on := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		bus := memory.NewBus()
		p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))), channels.WithServerSubWrappers(on))
		if err != nil {
			t.Fatal(err)
		}
		var wrapped atomic.Int32
		var topic atomic.Value
		w := func(next server.SubscriberFunc) server.SubscriberFunc {
			return func(ctx context.Context, m server.Message) error {
				wrapped.Add(1)
				topic.Store(m.Topic())
				return next(ctx, m)
			}
		}
		handled := make(chan struct{}, 1)
		s := &payments{Channels: channels.Channels{"order.created": channels.On(func(context.Context, *channels.Message) error {
			handled <- struct{}{}
			return nil
		})}}
		started := make(chan struct{})
		svc := microService(ctx, "payments", "2", micro.WrapSubscriber(w), p.Install(s),
			micro.AfterStart(func() error { close(started); return nil }))
		runErr := make(chan error, 1)
		go func() { runErr <- svc.Run() }()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("service did not start")
		}
		if err := s.SendToChannel(ctx, "order.created", 1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("not handled")
		}
		cancel()
		if err := <-runErr; err != nil {
			t.Fatal(err)
		}
		if on && (wrapped.Load() != 1 || topic.Load() != "order.created") {
			t.Fatalf("server wrapper ran %d times (topic %v)", wrapped.Load(), topic.Load())
		}
		if !on && wrapped.Load() != 0 {
			t.Fatalf("server wrapper ran %d times with WithServerSubWrappers(false)", wrapped.Load())
		}
	}
}
