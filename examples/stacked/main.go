// Command stacked shows two channels plugins on one go-micro service, each
// with its own adapter and schema property, and interceptors around both
// the handlers and the sends.
//
//	go run ./examples/stacked
//	go run ./examples/stacked -events memory://events -audit memory://audit
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"go-micro.dev/v4"
	mbroker "go-micro.dev/v4/broker"
	"go-micro.dev/v4/logger"
	"go-micro.dev/v4/registry"
	"go-micro.dev/v4/server"

	"github.com/microchannels/channels"
	_ "github.com/microchannels/channels/memory"
)

// Inventory declares channels for two plugins: Channels goes to the events
// adapter, AuditChannels to the audit adapter. Each plugin injects its own
// send function.
type Inventory struct {
	Channels      channels.Channels
	AuditChannels channels.Channels
	SendToChannel channels.SendFunc
	SendToAudit   channels.SendFunc
}

// timing is a custom interceptor: it measures every handler.
func timing(out *sync.Map) channels.Interceptor {
	return channels.Interceptor{
		Name: "timing",
		LocalChannel: func(next channels.Handler, info channels.Info) channels.Handler {
			return func(ctx context.Context, m *channels.Message) error {
				start := time.Now()
				err := next(ctx, m)
				out.Store(info.Channel, time.Since(start))
				return err
			}
		},
	}
}

// stamp adds a header to every message sent.
var stamp = channels.Interceptor{
	Name: "stamp",
	SendToChannel: func(next channels.SendFunc) channels.SendFunc {
		return func(ctx context.Context, ch string, p any, opts ...channels.SendOption) error {
			return next(ctx, ch, p, append(opts, channels.WithHeader("sent-by", "inventory"))...)
		}
	},
}

func main() {
	events := flag.String("events", "memory://events", "adapter of the events plugin")
	audit := flag.String("audit", "memory://audit", "adapter of the audit plugin")
	flag.Parse()
	if err := run(*events, *audit); err != nil {
		log.Fatal(err)
	}
}

func run(eventsURL, auditURL string) error {
	logger.DefaultLogger = logger.NewLogger(logger.WithLevel(logger.WarnLevel))
	slogger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var timings sync.Map
	ics := channels.WithInterceptors(channels.Recover(), channels.Logging(slogger), channels.Timeout(5*time.Second), timing(&timings), stamp)

	eventsPlugin, err := channels.New(channels.WithAdapter(eventsURL), ics)
	if err != nil {
		return err
	}
	// Its own schema property and send field; the adapter property and
	// trigger names may stay the defaults: Inventory has no such fields,
	// and only fields that exist can conflict.
	auditPlugin, err := channels.New(channels.WithAdapter(auditURL), ics,
		channels.WithSchemaProperty("AuditChannels"),
		channels.WithSendMethodName("SendToAudit"))
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	wg.Add(2)
	inv := &Inventory{}
	inv.Channels = channels.Channels{
		"stock.reserved": channels.On(func(ctx context.Context, m *channels.Message) error {
			defer wg.Done()
			fmt.Printf("events: %s %s (sent-by=%s)\n", m.Channel, m.Payload, m.Header("sent-by"))
			// Forward to the other broker; the ctx carries the chain.
			return inv.SendToAudit(ctx, "audit.log", map[string]string{"event": "stock.reserved"})
		}),
	}
	inv.AuditChannels = channels.Channels{
		"audit.log": channels.On(func(ctx context.Context, m *channels.Message) error {
			defer wg.Done()
			ci, _ := channels.FromContext(ctx)
			fmt.Printf("audit:  %s %s (parent channel %s, caller %s)\n", m.Channel, m.Payload, ci.ParentChannel, ci.Caller)
			return nil
		}),
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := registry.NewMemoryRegistry()
	srv := server.NewServer(server.Name("inventory"), server.Id(uuid.NewString()), server.Address("127.0.0.1:0"), server.Registry(reg))
	started := make(chan struct{})
	svc := micro.NewService(micro.Server(srv), micro.Registry(reg), micro.Broker(mbroker.NewMemoryBroker()),
		micro.Context(ctx), micro.HandleSignal(false),
		eventsPlugin.Install(inv), auditPlugin.Install(inv),
		micro.AfterStart(func() error { close(started); return nil }))
	done := make(chan error, 1)
	go func() { done <- svc.Run() }()
	select {
	case <-started:
	case err := <-done:
		return err
	}
	if err := inv.SendToChannel(ctx, "stock.reserved", map[string]int{"sku": 42, "qty": 3}); err != nil {
		return err
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		return err
	}
	timings.Range(func(k, v any) bool {
		fmt.Printf("timing: %s handled in %s\n", k, v.(time.Duration).Round(time.Microsecond))
		return true
	})
	return nil
}
