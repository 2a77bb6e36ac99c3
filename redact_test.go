package channels_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/memory"
	"github.com/microchannels/channels/redis"
)

// malformedURLs are adapter URLs with the password "Hunter2" that url.Parse
// rejects (or accepts with a credential in the query), for every scheme.
func malformedURLs() []string {
	var out []string
	for _, scheme := range []string{"redis", "rediss", "amqp", "amqps", "nats", "tls", "kafka", "memory"} {
		for _, f := range []string{
			"%s://user:Hunter2%%zz@127.0.0.1:6379",          // bad escape in the password
			"%s://:Hunter2@127.0.0.1:63x9",                  // bad port
			"%s://user:Hunter2/x@127.0.0.1:6379",            // "/" in the password: url.Parse sees port ":Hunter2"
			"%s://user:Hunter2 x@127.0.0.1:6379",            // space in the password
			"%s://user:Hunter2@[::1",                        // bad IPv6 host
			"%s://user:Hun#ter2@127.0.0.1:6379",             // "#" in the password: cut as a fragment
			"%s://user:Hunter2\x7f@127.0.0.1:6379",          // control character
			"%s://127.0.0.1:6379?password=Hunter2%%zz&x=1",  // credential in the query, bad escape
			"%s://127.0.0.1:6379?token=Hunter2&pool_size=x", // credential in the query, bad option
		} {
			out = append(out, fmt.Sprintf(f, scheme))
		}
	}
	out = append(out, "nats://Hunter2%zz@127.0.0.1:4222", "tls://Hunter2%zz@127.0.0.1:4222") // tokens
	return out
}

func leaksPassword(s string) bool {
	for _, frag := range []string{"Hun", "unter2", "ter2", "%zz"} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

func TestURLErrorsHidePasswords(t *testing.T) {
	for _, raw := range malformedURLs() {
		t.Run(raw, func(t *testing.T) {
			if _, err := channels.New(channels.WithAdapter(raw)); err != nil && leaksPassword(err.Error()) {
				t.Errorf("channels.New: %v", err)
			}
			if a, err := redis.New(raw); err != nil && leaksPassword(err.Error()) {
				t.Errorf("redis.New: %v", err)
			} else if err == nil && leaksPassword(a.String()) {
				t.Errorf("redis adapter String: %s", a)
			}
		})
	}
}

func TestLogsHidePasswords(t *testing.T) {
	var buf channelstest.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), channels.WithLogger(logger),
		channels.WithMaxRetries(1), channels.WithBackoff(broker.ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	s := &svc{Name: "logs", Channels: channels.Channels{"c": channels.On(func(ctx context.Context, m *channels.Message) error {
		done <- struct{}{}
		// What drivers say about the malformed URLs of every scheme.
		var errs []error
		for _, raw := range malformedURLs() {
			if _, err := url.Parse(raw); err != nil {
				errs = append(errs, err)
			}
			errs = append(errs, fmt.Errorf("dial %q: refused", raw))
		}
		return errors.Join(append(errs,
			fmt.Errorf(`connect amqp://user:Hunter2@127.0.0.1:5672: refused`),
			fmt.Errorf(`parse "redis://:Hunter2%%zz@127.0.0.1:6379": invalid URL escape "%%zz"`),
			fmt.Errorf(`parse "nats://user:Hunter2/x@h": invalid port ":Hunter2" after host`),
			fmt.Errorf(`kafka sasl: password=Hunter2 rejected`))...)
	})}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	if err := s.SendToChannel(context.Background(), "c", 1); err != nil {
		t.Fatal(err)
	}
	<-done
	<-done
	eventually(t, func() bool { return strings.Contains(buf.String(), "dropped") })
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); leaksPassword(out) || !strings.Contains(out, "amqp://user:xxxxx@127.0.0.1:5672") {
		t.Fatalf("log output:\n%s", out)
	}
}

// leakyAdapter fails with driver errors that show a URL with its password.
type leakyAdapter struct {
	*memory.Adapter
	connectErr, subscribeErr error
}

func (l *leakyAdapter) Connect(ctx context.Context, env broker.Env) error {
	if l.connectErr != nil {
		return l.connectErr
	}
	return l.Adapter.Connect(ctx, env)
}

func (l *leakyAdapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	return nil, l.subscribeErr
}

func TestAdapterErrorsHidePasswords(t *testing.T) {
	driverErr := errors.New(`dial "amqp://user:Hunter2@127.0.0.1:5672": connection refused (password=Hunter2)`)
	for _, a := range []*leakyAdapter{
		{Adapter: memory.New(memory.WithBus(memory.NewBus())), connectErr: driverErr},
		{Adapter: memory.New(memory.WithBus(memory.NewBus())), subscribeErr: driverErr},
	} {
		p, err := channels.New(channels.WithAdapter(a))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Register(&svc{Name: "s", Channels: channels.Channels{"c": channels.On(func(context.Context, *channels.Message) error { return nil })}}); err != nil {
			t.Fatal(err)
		}
		err = p.Start(context.Background())
		if err == nil || leaksPassword(err.Error()) || !errors.Is(err, driverErr) {
			t.Fatalf("Start = %v", err)
		}
	}
}
