package kafka

import (
	"context"
	"log/slog"
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

// service is the schema of a test service.
type service = channelstest.Service

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

// logRec is a log handler that keeps every record (debug included).
type logRec struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRec) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRec) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRec) WithGroup(string) slog.Handler            { return l }
func (l *logRec) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}

// count is the number of records whose message contains msg.
func (l *logRec) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

// values is the set of the values of attribute key in the records whose
// message contains msg.
func (l *logRec) values(msg, key string) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for _, r := range l.recs {
		if !strings.Contains(r.Message, msg) {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				out[a.Value.String()] = true
			}
			return true
		})
	}
	return out
}
