package kafka

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// timings shorten the group timings so that members join and leave quickly.
var timings = kafka.ChannelOptions{SessionTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
	CommitInterval: 50 * time.Millisecond, MaxWait: 200 * time.Millisecond}

func kafkaURL() string { return "kafka://" + strings.Join(brokerenv.KafkaBrokers(), ",") }

func needKafka(t *testing.T) {
	t.Helper()
	brokerenv.Need(t, "kafka", func() error { return brokerenv.Dial(brokerenv.KafkaBrokers()[0]) })
}

var (
	unique       = channelstest.Unique
	eventually   = channelstest.EventuallyTrue
	consistently = channelstest.ConsistentlyTrue
)

type service struct {
	Name     string
	Channels channels.Channels
}

// startPlugin starts a plugin on the test Kafka with schema (nil: a sender)
// and stops it at the end of the test.
func startPlugin(t *testing.T, schema any) *channels.Plugin {
	t.Helper()
	a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	return channelstest.StartPlugin(t, a, schema)
}

type rec struct {
	mu   sync.Mutex
	msgs []*channels.Message
}

func (r *rec) handle(_ context.Context, m *channels.Message) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return nil
}

func (r *rec) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.msgs) }
