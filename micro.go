package channels

import (
	"context"
	"fmt"

	"go-micro.dev/v4"
	"go-micro.dev/v4/codec"
	"go-micro.dev/v4/server"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

type claimsKey struct{}

// claims records, per micro.Service, which schema field names plugins took.
type claims map[string]*Plugin

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
// Place Install after micro.Context, which replaces the options context in
// which stacked plugins record their claims.
func (p *Plugin) Install(schemas ...any) micro.Option {
	return func(o *micro.Options) {
		if err := p.claim(o); err != nil {
			p.installErr = err
		} else if err := p.Register(schemas...); err != nil {
			p.installErr = err
		}
		o.BeforeStart = append(o.BeforeStart, func() error {
			if p.installErr != nil {
				return p.installErr
			}
			if o.Server != nil {
				so := o.Server.Options()
				p.setService(so.Name, so.Version)
			}
			return p.Connect(context.Background())
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

func (p *Plugin) claim(o *micro.Options) error {
	if o.Context == nil {
		o.Context = context.Background()
	}
	c, ok := o.Context.Value(claimsKey{}).(claims)
	if !ok {
		c = claims{}
		o.Context = context.WithValue(o.Context, claimsKey{}, c)
	}
	for _, n := range []string{p.o.schemaProperty, p.o.sendMethodName, p.o.adapterPropertyName, p.o.channelHandlerTrigger} {
		if other, taken := c[n]; taken && other != p {
			return fmt.Errorf("%w: %q is already used by another channels plugin on this service", ErrDuplicateProperty, n)
		}
	}
	for _, n := range []string{p.o.schemaProperty, p.o.sendMethodName, p.o.adapterPropertyName, p.o.channelHandlerTrigger} {
		c[n] = p
	}
	return nil
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
