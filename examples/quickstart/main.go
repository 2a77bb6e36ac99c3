// Command quickstart runs two go-micro services in one program: "orders"
// publishes order.created, and two members of "payments" share the work in
// one consumer group. Some payments fail on purpose: most once (they are
// retried and succeed), a few every time (they end in the dead-letter
// queue, where orders reads them). It prints a summary.
//
//	go run ./examples/quickstart                       # embedded NATS JetStream, no setup, store removed at exit
//	go run ./examples/quickstart -adapter memory://    # in-memory bus
//	go run ./examples/quickstart -adapter redis://127.0.0.1:6379
//	go run ./examples/quickstart -adapter nats://127.0.0.1:4222
//	go run ./examples/quickstart -adapter amqp://guest:guest@127.0.0.1:5672
//	go run ./examples/quickstart -adapter kafka://127.0.0.1:9092
//
// Every name it creates is in the namespace -namespace (quickstart-<pid>
// by default), and it removes them all before it exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go-micro.dev/v4"
	"go-micro.dev/v4/broker"
	"go-micro.dev/v4/logger"
	"go-micro.dev/v4/registry"
	"go-micro.dev/v4/server"

	"github.com/microchannels/channels"
	_ "github.com/microchannels/channels/amqp"               // amqp:// and amqps:// URLs
	_ "github.com/microchannels/channels/jetstream"          // nats:// and tls:// URLs
	_ "github.com/microchannels/channels/jetstream/embedded" // nats-embedded:// (an in-process NATS server)
	_ "github.com/microchannels/channels/kafka"              // kafka:// URLs
	_ "github.com/microchannels/channels/memory"             // memory:// URLs
	_ "github.com/microchannels/channels/redis"              // redis:// and rediss:// URLs
)

// Order is the payload of order.created.
type Order struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
}

// Orders publishes orders and reads the dead letters.
type Orders struct {
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

// Payments consumes order.created.
type Payments struct {
	Channels channels.Channels
}

type stats struct {
	mu                                       sync.Mutex
	members                                  [2]int         // orders paid by each member of the payments group
	reasons                                  map[int]string // dead-lettered order -> x-error-message
	deadRun                                  map[int]int    // dead-lettered order -> x-redelivered-count
	sent, processed, attempts, retried, dead atomic.Int64
	seen                                     sync.Map // order id -> struct{}
}

func main() {
	adapter := flag.String("adapter", "nats-embedded://?store=temporary",
		"adapter URL or type name (nats-embedded://?store=temporary, memory://, redis://127.0.0.1:6379, nats://127.0.0.1:4222, ...)")
	n := flag.Int("n", 200, "orders to send")
	ns := flag.String("namespace", "", "namespace of every channel (default quickstart-<pid>: a fresh one per run on a shared broker)")
	flag.Parse()
	if err := runIn(*adapter, *ns, *n); err != nil {
		log.Fatal(err)
	}
}

func newService(ctx context.Context, name string, reg registry.Registry, opts ...micro.Option) micro.Service {
	srv := server.NewServer(server.Name(name), server.Id(uuid.NewString()), server.Address("127.0.0.1:0"), server.Registry(reg))
	base := []micro.Option{micro.Server(srv), micro.Registry(reg), micro.Broker(broker.NewMemoryBroker()),
		micro.Context(ctx), micro.HandleSignal(false)}
	return micro.NewService(append(base, opts...)...)
}

// cleaner removes what a run created on the broker: once every service
// has drained (none consumes any more) and before its plugin disconnects,
// each plugin removes the channel it consumes through its own adapter,
// which knows what it declared for it (its group, retry queues, the
// dead-letter queue).
type cleaner struct {
	ns      string
	adapter string
	drained sync.WaitGroup
	mu      sync.Mutex
}

// after is the option of a service whose plugin p consumes channel; the
// service must list it after p.Install, so that it runs after p drained.
func (c *cleaner) after(p *channels.Plugin, channel string) micro.Option {
	c.drained.Add(1)
	return micro.BeforeStop(func() error {
		c.drained.Done()
		all := make(chan struct{})
		go func() { c.drained.Wait(); close(all) }()
		select {
		case <-all:
		case <-time.After(10 * time.Second): // a service that does not stop: remove anyway
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		rm, ok := p.Adapter().(channels.ChannelRemover)
		if !ok {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rm.RemoveChannel(ctx, c.ns+"."+channel); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup of %s.%s on %s: %v\n", c.ns, channel, c.adapter, err)
		}
		return nil
	})
}

func run(adapter string, n int) error { return runIn(adapter, "", n) }

// runIn runs the demo in namespace ns ("": quickstart-<pid>).
func runIn(adapter, ns string, n int) error {
	logger.DefaultLogger = logger.NewLogger(logger.WithLevel(logger.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := registry.NewMemoryRegistry()
	st := &stats{reasons: map[int]string{}, deadRun: map[int]int{}}
	if ns == "" {
		ns = fmt.Sprintf("quickstart-%d", os.Getpid()) // a fresh namespace per run on a shared broker
	}

	// Errors only: the retries below are on purpose, the summary explains them.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	common := []channels.Option{
		channels.WithAdapter(adapter),
		channels.WithLogger(quiet),
		channels.WithNamespace(ns),
		channels.WithMaxRetries(3),
		channels.WithBackoff(channels.ExponentialBackoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}),
		channels.WithDeadLettering(channels.DeadLettering{Enabled: true}),
	}

	// payments: two members of one group ("payments"), each on its own plugin and connection.
	pay := func(member int, ctx context.Context, o Order, m *channels.Message) error {
		st.attempts.Add(1)
		if m.Attempt > 1 {
			st.retried.Add(1)
		}
		switch {
		case o.ID%50 == 0:
			return fmt.Errorf("card declined for order %d", o.ID) // fails every time: dead-lettered
		case o.ID%7 == 0 && m.Attempt == 1:
			return errors.New("payment gateway timeout") // fails once: retried
		}
		if _, dup := st.seen.LoadOrStore(o.ID, struct{}{}); !dup {
			st.processed.Add(1)
			st.mu.Lock()
			st.members[member]++
			st.mu.Unlock()
		}
		return nil
	}
	// Orders are sent once every member has started: its group exists on
	// the broker from then on, and a new group starts at new messages.
	var services []micro.Service
	var started []chan struct{}
	startedHook := func() micro.Option {
		c := make(chan struct{})
		started = append(started, c)
		return micro.AfterStart(func() error { close(c); return nil })
	}
	clean := &cleaner{ns: ns, adapter: adapter}
	for member := range 2 {
		p, err := channels.New(append(common, channels.WithMaxInFlight(8))...)
		if err != nil {
			return err
		}
		handler := func(ctx context.Context, o Order, m *channels.Message) error { return pay(member, ctx, o, m) }
		services = append(services, newService(ctx, "payments", reg, p.Install(&Payments{
			Channels: channels.Channels{"order.created": channels.On(channels.Typed(handler))},
		}), startedHook(), clean.after(p, "order.created")))
	}

	// orders: publishes, and reads the dead-letter queue.
	orders := &Orders{Channels: channels.Channels{
		"FAILED_MESSAGES": channels.On(channels.Typed(func(ctx context.Context, o Order, m *channels.Message) error {
			st.dead.Add(1)
			st.mu.Lock()
			st.reasons[o.ID] = m.Headers["x-error-message"]
			st.deadRun[o.ID], _ = strconv.Atoi(m.Headers["x-redelivered-count"])
			st.mu.Unlock()
			return nil
		})),
	}}
	po, err := channels.New(common...)
	if err != nil {
		return err
	}
	services = append(services, newService(ctx, "orders", reg, po.Install(orders), startedHook(), clean.after(po, "FAILED_MESSAGES")))

	var wg sync.WaitGroup
	errs := make(chan error, len(services))
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	for _, c := range started {
		select {
		case <-c:
		case err := <-errs:
			return err
		}
	}

	start := time.Now()
	for i := 1; i <= n; i++ {
		if err := orders.SendToChannel(ctx, "order.created", Order{ID: i, Amount: float64(i) * 1.5}); err != nil {
			return err
		}
		st.sent.Add(1)
	}
	deadline := time.Now().Add(60 * time.Second)
	for st.processed.Load()+st.dead.Load() < st.sent.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}

	fmt.Printf("adapter       %s\n", adapter)
	fmt.Printf("sent          %d   orders published by the orders service\n", st.sent.Load())
	fmt.Printf("processed     %d   paid: member 1 of group \"payments\" %d, member 2 %d (one group shares the work)\n",
		st.processed.Load(), st.members[0], st.members[1])
	fmt.Printf("attempts      %d   handler runs in all\n", st.attempts.Load())
	fmt.Printf("retried       %d   runs with Attempt > 1: orders whose id is a multiple of 7 fail once (gateway\n"+
		"                   timeout) and are paid on attempt 2; orders 50, 100... fail on every attempt\n", st.retried.Load())
	fmt.Printf("dead-lettered %d   given up after 1 run + 3 retries, read back from FAILED_MESSAGES:\n", st.dead.Load())
	ids := make([]int, 0, len(st.reasons))
	for id := range st.reasons {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Printf("                   order %d: %q (x-redelivered-count %d)\n", id, st.reasons[id], st.deadRun[id])
	}
	fmt.Printf("time          %s\n", took.Round(time.Millisecond))
	if st.processed.Load()+st.dead.Load() != st.sent.Load() {
		return fmt.Errorf("summary does not add up: sent %d != processed %d + dead-lettered %d",
			st.sent.Load(), st.processed.Load(), st.dead.Load())
	}
	fmt.Println("ok: sent = processed + dead-lettered")
	return nil
}
