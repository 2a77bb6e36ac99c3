package channels

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

const (
	stateIdle int32 = iota
	stateConnected
	stateRunning
	stateDraining
	stateStopped
)

// Plugin connects service schemas to one adapter. Several plugins can be
// installed on one service, each with its own adapter and schema property.
type Plugin struct {
	o       options
	adapter broker.Adapter
	// instant: the adapter publishes without waiting on a broker
	// (broker.InstantPublisher), so sends need no default deadline.
	instant bool
	// limits are the broker's size limits (a broker.Limiter adapter),
	// read at Start: sends over them are refused before the broker.
	limits broker.Limits
	// abandoned are the Done channels of the steps of a stop that were
	// left running at its deadline; a new start waits for them (p.mu).
	abandoned []<-chan struct{}
	nodeID    string
	// instance is the node id made unique in this process while connected
	// (claimInstance); consumer names derive from it.
	instance string

	// mu serializes the lifecycle (Register, Start, Stop).
	mu       sync.Mutex
	schemas  []*schema
	resolved []*resolved
	// published is p.resolved for readers that do not take mu
	// (DeadLetterQueue, which a handler may call while a stop holds mu).
	published atomic.Pointer[[]*resolved]
	subs      []broker.Subscription
	svcName   string
	svcVer    string

	state atomic.Int32
	send  atomic.Pointer[hooks.SendFunc]
	// sendBatch is the batch send with its interceptors; nil when an
	// interceptor has a SendToChannel hook and no SendBatch hook (then a
	// batch is sent message by message through send).
	sendBatch hooks.SendBatchFunc
	tel       *telemetry
	// serverICs are the go-micro server's subscriber wrappers as
	// interceptors, inside the plugin's own (set at BeforeStart).
	serverICs []hooks.Interceptor

	// installErr is a Register error found while installing on a micro.Service;
	// it is returned by BeforeStart.
	installErr error
}

// New builds a plugin. It validates the options and resolves the adapter
// (without connecting): bad options, an unknown adapter type or URL scheme
// are reported here.
func New(opts ...Option) (*Plugin, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.adapterSpec == nil {
		return nil, invalid("no adapter: use channels.WithAdapter(\"memory://\") or a broker URL")
	}
	names := map[string]string{}
	for _, n := range o.names() {
		if other, dup := names[n.value]; dup {
			return nil, invalid("%s and %s both name the schema field %q", other, n.option, n.value)
		}
		names[n.value] = n.option
	}
	for _, dl := range []string{o.deadLettering.QueueName, o.deadLettering.ExchangeName} {
		if err := checkName("dead-letter name", prefixed(o.namespace, dl)); err != nil {
			return nil, err
		}
	}
	p := &Plugin{o: o, nodeID: o.nodeID}
	switch a := o.adapterSpec.(type) {
	case string:
		ad, err := broker.Resolve(a)
		if err != nil {
			return nil, err
		}
		p.adapter = ad
	case broker.Adapter:
		p.adapter = a
	}
	_, p.instant = p.adapter.(broker.InstantPublisher)
	tel, err := newTelemetry(o.meterProvider, o.tracerProvider, o.observers)
	if tel != nil {
		tel.traceLinkOnly = o.traceLinkOnly
	}
	if err != nil {
		return nil, invalid("metrics: %v", err)
	}
	p.tel = tel
	send := hooks.ChainSend(tel.send(p.adapter.Name(), o.namespace, p.send0), o.interceptors)
	p.send.Store(&send)
	if hooks.BatchCapable(o.interceptors) {
		p.sendBatch = hooks.ChainSendBatch(tel.sendBatch(p.adapter.Name(), o.namespace, p.sendBatch0), o.interceptors)
	}
	return p, nil
}

// Adapter returns the plugin's adapter.
func (p *Plugin) Adapter() broker.Adapter { return p.adapter }

func (p *Plugin) adapterName() string { return p.adapter.Name() }

// DeadLetterQueue returns the full (namespaced) name of the dead-letter
// queue of a registered channel, given by its full name or by its key in
// the schema's Channels, and whether dead-lettering is on for it; false
// before the plugin connected (names are resolved at Start). When
// several registered groups read the channel, the first registered one
// with dead-lettering on answers. It is what package dlq takes, with
// Adapter, for a service that operates its own dead letters:
//
//	q, ok := p.DeadLetterQueue("order.paid")
//	if ok {
//		res, err := dlq.Replay(ctx, p.Adapter(), q, dlq.Filter{}, dlq.ReplayOptions{})
//	}
func (p *Plugin) DeadLetterQueue(channel string) (string, bool) {
	rs := p.published.Load()
	if rs == nil {
		return "", false
	}
	full := prefixed(p.o.namespace, channel)
	for _, r := range *rs {
		if (r.ch.Name == channel || r.ch.Name == full || r.key == channel) && r.ch.DeadLetter.Enabled {
			return r.ch.DeadLetter.Queue, true
		}
	}
	return "", false
}

func (p *Plugin) setService(name, version string) {
	p.mu.Lock()
	p.svcName, p.svcVer = name, version
	p.mu.Unlock()
}

func (p *Plugin) serviceIdentity() (string, string) {
	if p.svcName != "" {
		return p.svcName, p.svcVer
	}
	return p.o.serviceName, p.o.serviceVersion
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// Start connects the adapter, provisions every channel and starts consuming.
// It is Connect followed by Consume. Start after Stop starts again.
func (p *Plugin) Start(ctx context.Context) error {
	if err := p.Connect(ctx); err != nil {
		return err
	}
	p.Consume()
	return nil
}

// Connect connects the adapter and provisions every declared channel
// (groups, queues, consumers) without delivering anything yet. Publishing
// works from here on. All fallible work of starting happens here.
func (p *Plugin) Connect(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.installErr; err != nil {
		return err
	}
	switch p.state.Load() {
	case stateConnected, stateRunning:
		return ErrAlreadyStarted
	case stateDraining:
		return fmt.Errorf("%w: still stopping", ErrAlreadyStarted)
	}
	ctx, cancel := withDefaultTimeout(ctx, p.o.connectTimeout)
	defer cancel()
	if err := p.awaitAbandoned(ctx); err != nil {
		return err
	}

	svc, ver := p.serviceIdentity()
	var all []*resolved
	for _, s := range p.schemas {
		rs, err := p.resolve(s, svc, ver)
		if err != nil {
			return err
		}
		all = append(all, rs...)
	}
	if err := checkDuplicates(all); err != nil {
		return err
	}
	p.instance = claimInstance(p, p.nodeID)
	for _, r := range all {
		r.ch.ConsumerName = p.consumerName(r.service, r.ch.Name)
	}
	env := broker.Env{NodeID: p.instance, Serializer: p.o.serializer, Logger: p.o.logger}
	if err := p.adapter.Connect(ctx, env); err != nil {
		releaseInstance(p, p.nodeID)
		return fmt.Errorf("channels: connect %s adapter: %w", p.adapter.Name(), redactErr(err))
	}
	if l, ok := p.adapter.(broker.Limiter); ok {
		p.limits = l.Limits()
	}
	subs := make([]broker.Subscription, 0, len(all))
	for _, r := range all {
		r.ch.Limits = p.limits
		sub, err := p.adapter.Subscribe(ctx, r.ch)
		if err != nil {
			for _, s := range subs {
				_ = s.Drain(ctx)
			}
			_ = p.adapter.Close(ctx)
			releaseInstance(p, p.nodeID)
			p.state.Store(stateStopped)
			return fmt.Errorf("channels: subscribe %q (group %q): %w", r.ch.Name, r.ch.Group, redactErr(err))
		}
		subs = append(subs, sub)
	}
	p.resolved, p.subs = all, subs
	p.published.Store(&all)
	p.watchLag(all)
	p.state.Store(stateConnected)
	return nil
}

// watchLag reports the lag gauges of rs when metrics are on.
func (p *Plugin) watchLag(rs []*resolved) {
	chs := make([]*broker.Channel, len(rs))
	for i, r := range rs {
		chs[i] = r.ch
	}
	if err := p.tel.watchLag(p.o.meterProvider, p.adapter, chs); err != nil {
		p.o.logger.Warn("channels: lag gauges unavailable", "error", err)
	}
}

// Consume starts delivering to the handlers. It cannot fail; the adapters
// retry broker errors in the background.
func (p *Plugin) Consume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.state.CompareAndSwap(stateConnected, stateRunning) {
		return
	}
	for _, s := range p.subs {
		s.Start()
	}
	p.o.logger.Info("channels: consuming", "adapter", p.adapter.Name(), "channels", len(p.subs))
}

// Stop drains (stop fetching, wait for running handlers, settle them) and
// disconnects. Without a deadline on ctx, the drain is bounded by
// DefaultStopTimeout. Handlers still running when it ends get their context
// cancelled and their messages are redelivered later.
func (p *Plugin) Stop(ctx context.Context) error {
	err := p.Drain(ctx)
	return errors.Join(err, p.Disconnect(ctx))
}

// Drain stops consuming and waits for running handlers. Publishing still
// works until Disconnect, so draining handlers can send downstream.
func (p *Plugin) Drain(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state.Load()
	if st != stateConnected && st != stateRunning {
		return nil
	}
	p.state.Store(stateDraining)
	ctx, cancel := withDefaultTimeout(ctx, p.o.stopTimeout)
	defer cancel()
	errs := make([]error, len(p.subs))
	var wg sync.WaitGroup
	for i, s := range p.subs {
		what := "a subscription's drain"
		if i < len(p.resolved) {
			what = "the drain of " + p.resolved[i].ch.Name
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: an adapter whose drain waits on a frozen link is
			// left to finish in the background; Stop keeps its deadline.
			err := kit.Bounded(ctx, what, func() error { return s.Drain(ctx) })
			if abandoned(err) != nil {
				err = fmt.Errorf("%w: %w", broker.ErrDrainTimeout, err)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	p.subs = nil
	p.abandoned = slices.DeleteFunc(p.abandoned, closed)
	for _, err := range errs {
		if ae := abandoned(err); ae != nil {
			p.abandoned = append(p.abandoned, ae.Done)
		}
	}
	for _, r := range p.resolved {
		p.tel.forget([]*broker.Channel{r.ch})
	}
	return errors.Join(errs...)
}

// Disconnect closes the adapter. SendToChannel returns ErrClosed afterwards.
func (p *Plugin) Disconnect(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state.Load()
	if st == stateIdle || st == stateStopped {
		return nil
	}
	p.state.Store(stateStopped)
	defer releaseInstance(p, p.nodeID)
	ctx, cancel := withDefaultTimeout(ctx, p.o.stopTimeout)
	defer cancel()
	err := kit.Bounded(ctx, "close of the "+p.adapter.Name()+" adapter", func() error { return p.adapter.Close(ctx) })
	if ae := abandoned(err); ae != nil {
		p.abandoned = append(p.abandoned, ae.Done)
	}
	return err
}

// abandoned returns the *broker.AbandonedError in err, if any.
func abandoned(err error) *broker.AbandonedError {
	var ae *broker.AbandonedError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// awaitAbandoned waits, bounded by ctx, for the steps of an earlier stop
// that were left running at its deadline (a drain, the adapter's Close):
// connecting again before they end would have them close what the new
// start opens.
func (p *Plugin) awaitAbandoned(ctx context.Context) error {
	for _, done := range p.abandoned {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("%w: the previous stop is still closing the %s adapter (a step left running at its deadline): %w",
				ErrAlreadyStarted, p.adapter.Name(), ctx.Err())
		}
	}
	p.abandoned = nil
	return nil
}

// errBytesNotJSON is the cause of the EncodeError of a []byte payload that
// is not JSON, sent with the JSON serializer.
var errBytesNotJSON = errors.New("a []byte payload is sent as is only when it is valid JSON " +
	"(the JSON serializer would make it a base64 string): send bytes that are not JSON with broker.WithRaw(), " +
	"or a base64 string explicitly")
