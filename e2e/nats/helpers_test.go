package nats

import (
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

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

var (
	unique       = channelstest.Unique
	eventually   = channelstest.EventuallyTrue
	consistently = channelstest.ConsistentlyTrue
)

// service is the schema of a test service.
type service = channelstest.Service

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
	a, err := jetstream.New(natsURL(), jetstream.WithChannelOptions(o))
	if err != nil {
		t.Fatal(err)
	}
	return channelstest.StartPlugin(t, a, schema, opts...)
}
