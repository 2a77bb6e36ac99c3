package channels

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"go-micro.dev/v4"
	"go-micro.dev/v4/codec"
	"go-micro.dev/v4/server"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

type claimsKey struct{}

// serviceClaims is what the channels plugins installed on one micro.Service
// know of each other (through micro.Options.Context): the schema fields
// each one uses, the plugins in install order, and the install errors,
// which every plugin's BeforeStart returns before anything connects.
type serviceClaims struct {
	mu      sync.Mutex
	fields  map[fieldKey]fieldClaim
	plugins []*Plugin
	errs    []error
}

type fieldKey struct {
	schema uintptr // address of the schema struct
	field  string
}

type fieldClaim struct {
	p      *Plugin
	option string // the option that names the field for p
}

// Install registers schemas and hooks the plugin into the go-micro
// lifecycle:
//   - BeforeStart connects the adapter and provisions every channel (an
//     error aborts Run before the server starts);
//   - AfterStart starts consuming (it cannot fail);
//   - BeforeStop drains: no new fetches, running handlers finish;
//   - AfterStop disconnects.
//
// The service name and version come from the go-micro server options unless
// a schema has its own Name/Version fields. Install never calls svc.Init.
//
// Plugins installed on one service know each other: two plugins using one
// field of one schema (both reading it as their schema property, or both
// injecting it) is an error naming the option to change, returned by the
// BeforeStart of every plugin of the service, so nothing connects; and when
// a plugin's BeforeStart fails, it stops the plugins of the service that
// already connected (go-micro runs no stop hook after a failed start), so a
// failed Run leaves nothing connected and Run can be tried again. Place
// Install after micro.Context, which replaces the options context in which
// the plugins meet, and after options that add BeforeStart hooks of their
// own: a failure of such a hook after the plugins connected is not seen by
// them.
func (p *Plugin) Install(schemas ...any) micro.Option {
	return func(o *micro.Options) {
		c := claimsOf(o)
		if err := c.claim(p, schemas); err != nil {
			p.fail(c, err)
		} else if err := p.Register(schemas...); err != nil {
			p.fail(c, err)
		}
		o.BeforeStart = append(o.BeforeStart, func() error {
			if err := c.err(); err != nil {
				return err
			}
			if o.Server != nil {
				so := o.Server.Options()
				p.setService(so.Name, so.Version)
				p.setSubWrappers(so.SubWrappers)
			}
			if err := p.Connect(context.Background()); err != nil {
				c.stopOthers(p)
				return err
			}
			return nil
		})
		o.AfterStart = append(o.AfterStart, func() error {
			p.Consume()
			return nil
		})
		o.BeforeStop = append(o.BeforeStop, func() error {
			if err := p.Drain(context.Background()); err != nil {
				p.o.logger.Error("channels: drain", "error", err)
				return err
			}
			return nil
		})
		o.AfterStop = append(o.AfterStop, func() error {
			return p.Disconnect(context.Background())
		})
	}
}

// fail records an install error: returned by Connect (p.Start) and by the
// BeforeStart of every plugin of the service, and logged at once.
func (p *Plugin) fail(c *serviceClaims, err error) {
	p.mu.Lock()
	p.installErr = err
	p.mu.Unlock()
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
	p.o.logger.Error("channels: install", "error", err)
}

func claimsOf(o *micro.Options) *serviceClaims {
	if o.Context == nil {
		o.Context = context.Background()
	}
	c, ok := o.Context.Value(claimsKey{}).(*serviceClaims)
	if !ok {
		c = &serviceClaims{fields: map[fieldKey]fieldClaim{}}
		o.Context = context.WithValue(o.Context, claimsKey{}, c)
	}
	return c
}

func (c *serviceClaims) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

// claim records the schema fields p uses; a field of one schema used by
// two plugins is an ErrDuplicateProperty naming the option to change. Only
// fields that exist count.
func (c *serviceClaims) claim(p *Plugin, schemas []any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.plugins, p) {
		c.plugins = append(c.plugins, p)
	}
	var mine []fieldKey
	for _, s := range schemas {
		v := reflect.ValueOf(s)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			continue // Register reports it
		}
		for _, n := range p.o.names() {
			if _, ok := v.Elem().Type().FieldByName(n.value); !ok {
				continue
			}
			k := fieldKey{v.Pointer(), n.value}
			if other, taken := c.fields[k]; taken && other.p != p {
				for _, m := range mine {
					delete(c.fields, m)
				}
				return fmt.Errorf("%w: field %s of %T is used by two channels plugins on this service (%s of one, %s of the other): give one of them another name with channels.%s",
					ErrDuplicateProperty, n.value, s, other.option, n.option, n.option)
			}
			c.fields[k] = fieldClaim{p: p, option: n.option}
			mine = append(mine, k)
		}
	}
	return nil
}

// stopOthers stops the plugins of the service other than failed; those
// that are not connected are left as they are.
func (c *serviceClaims) stopOthers(failed *Plugin) {
	c.mu.Lock()
	others := slices.Clone(c.plugins)
	c.mu.Unlock()
	for _, q := range others {
		if q == failed {
			continue
		}
		if err := q.Stop(context.Background()); err != nil {
			q.o.logger.Error("channels: stop after a failed start", "error", err)
		}
	}
}

// FromSubscriberWrapper adapts a go-micro server.SubscriberWrapper into a
// channel interceptor. The wrapper sees a server.Message whose Topic is the
// channel, Payload the *channels.Message, Body the payload bytes and Header
// the message headers.
func FromSubscriberWrapper(name string, w server.SubscriberWrapper) hooks.Interceptor {
	return hooks.Interceptor{Name: name, LocalChannel: func(next broker.Handler, _ hooks.Info) broker.Handler {
		inner := func(ctx context.Context, m server.Message) error {
			return next(ctx, m.Payload().(*broker.Message))
		}
		wrapped := w(inner)
		return func(ctx context.Context, msg *broker.Message) error {
			return wrapped(ctx, subscriberMessage{msg})
		}
	}}
}

type subscriberMessage struct{ m *broker.Message }

func (s subscriberMessage) Topic() string             { return s.m.Channel }
func (s subscriberMessage) Payload() interface{}      { return s.m }
func (s subscriberMessage) ContentType() string       { return "application/json" }
func (s subscriberMessage) Header() map[string]string { return s.m.Headers }
func (s subscriberMessage) Body() []byte              { return s.m.Payload }
func (s subscriberMessage) Codec() codec.Reader       { return nil }

// setSubWrappers records the go-micro server's subscriber wrappers
// (micro.WrapSubscriber), which wrap the channel handlers inside the
// plugin's own interceptors, unless WithServerSubWrappers(false).
func (p *Plugin) setSubWrappers(ws []server.SubscriberWrapper) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serverICs = nil
	if p.o.noSubWrappers {
		return
	}
	for i, w := range ws {
		p.serverICs = append(p.serverICs, FromSubscriberWrapper(fmt.Sprintf("server.SubWrappers[%d]", i), w))
	}
}
