package channels

import (
	"context"
	"fmt"
	"slices"

	"github.com/microchannels/channels/broker"
)

// Register adds service schemas (pointers to structs) and injects the send
// function, adapter and trigger fields they declare. Install calls it for
// you. On a started plugin it also provisions the new channels at once (and
// starts consuming them when the plugin consumes), bounded by the connect
// timeout. A call registers all its schemas or none.
func (p *Plugin) Register(schemas ...any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	added := make([]*schema, 0, len(schemas))
	for _, s := range schemas {
		sc, err := p.readSchema(s)
		if err != nil {
			return err
		}
		if err := p.checkDeclared(sc); err != nil {
			return err
		}
		for _, have := range slices.Concat(p.schemas, added) {
			if have.ptr.Pointer() == sc.ptr.Pointer() {
				return fmt.Errorf("%w: schema %T registered twice", ErrInvalidSchema, s)
			}
		}
		added = append(added, sc)
	}
	if st := p.state.Load(); st == stateConnected || st == stateRunning {
		if err := p.subscribeLate(added, st == stateRunning); err != nil {
			return err
		}
	}
	for _, sc := range added {
		p.inject(sc)
		p.schemas = append(p.schemas, sc)
	}
	return nil
}

// checkDeclared reports at Register what Connect would refuse in the
// channels of a schema: their resolved policies (MaxDeliveries below
// MaxRetries+1), names and groups, and, with a broker.ChannelChecker
// adapter, the adapter's options (one of another adapter's package, bad
// values) and the portable settings it cannot map. A group derived from a
// service name that is not known yet (a plugin installed on a micro.Service
// learns it at start) is checked when it is.
func (p *Plugin) checkDeclared(s *schema) error {
	svc, ver := p.serviceIdentity()
	if s.name == "" && svc == "" {
		svc = "service"
	}
	rs, err := p.resolveWith(s, svc, ver, false)
	if err != nil {
		return err
	}
	cc, ok := p.adapter.(broker.ChannelChecker)
	if !ok {
		return nil
	}
	for _, r := range rs {
		if err := cc.CheckChannel(r.ch); err != nil {
			return fmt.Errorf("%s.%s[%q]: %w", s.ptr.Elem().Type(), p.o.schemaProperty, r.key, redactErr(err))
		}
	}
	return nil
}

// subscribeLate provisions the channels of schemas registered after
// Connect, and starts them when the plugin is consuming. Called with p.mu.
func (p *Plugin) subscribeLate(added []*schema, running bool) error {
	svc, ver := p.serviceIdentity()
	var rs []*resolved
	for _, s := range added {
		r, err := p.resolve(s, svc, ver)
		if err != nil {
			return err
		}
		rs = append(rs, r...)
	}
	if err := checkDuplicates(append(slices.Clone(p.resolved), rs...)); err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(context.Background(), p.o.connectTimeout)
	defer cancel()
	subs := make([]broker.Subscription, 0, len(rs))
	for _, r := range rs {
		r.ch.Limits = p.limits
		sub, err := p.adapter.Subscribe(ctx, r.ch)
		if err != nil {
			for _, s := range subs {
				_ = s.Drain(ctx)
			}
			return fmt.Errorf("channels: subscribe %q (group %q): %w", r.ch.Name, r.ch.Group, redactErr(err))
		}
		subs = append(subs, sub)
	}
	if running {
		for _, s := range subs {
			s.Start()
		}
		p.o.logger.Info("channels: consuming late-registered channels", "adapter", p.adapter.Name(), "channels", len(subs))
	}
	p.resolved = append(p.resolved, rs...)
	pub := slices.Clip(p.resolved)
	p.published.Store(&pub)
	p.subs = append(p.subs, subs...)
	p.watchLag(rs)
	return nil
}

// checkDuplicates refuses one channel and group declared twice.
func checkDuplicates(all []*resolved) error {
	seen := map[[2]string]string{}
	for _, r := range all {
		k := [2]string{r.ch.Name, r.ch.Group}
		if other, dup := seen[k]; dup {
			return fmt.Errorf("%w: channel %q group %q declared twice (%s and %s)", ErrInvalidSchema, r.ch.Name, r.ch.Group, other, r.service)
		}
		seen[k] = r.service
	}
	return nil
}
