package nats

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/jetstream"
)

// timings shorten AckWait so that a crashed member's message comes back
// within the tests' deadlines.
var timings = jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}

func natsURL() string { return brokerenv.NATSURL() }

func needNATS(t *testing.T) {
	t.Helper()
	brokerenv.Need(t, "nats", func() error { return brokerenv.DialURL(natsURL()) })
}

func unique(base string) string {
	return fmt.Sprintf("%s.%d.%d", base, os.Getpid(), time.Now().UnixNano())
}

type service struct {
	Name          string
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

// newPlugin builds a plugin on the test NATS with adapter-wide options.
func newPlugin(t *testing.T, o jetstream.ChannelOptions, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	a, err := jetstream.New(natsURL(), jetstream.WithChannelOptions(o))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(a)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startPlugin starts a plugin with schema (nil: a sender) and stops it at
// the end of the test.
func startPlugin(t *testing.T, o jetstream.ChannelOptions, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	p := newPlugin(t, o, opts...)
	if schema != nil {
		if err := p.Register(schema); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(timeout).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}

func consistently(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Consistently(cond).WithTimeout(d).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}
