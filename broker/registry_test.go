package broker_test

import (
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/microchannels/channels/broker"
)

var registerFakes sync.Once

// TestResolveSuggests: an unknown URL scheme or adapter name that is a
// near miss of a registered one is answered with the closest, and with
// the registered list.
func TestResolveSuggests(t *testing.T) {
	registerFakes.Do(func() {
		none := func(*url.URL) (broker.Adapter, error) { return nil, errors.New("not built in this test") }
		broker.Register("Kafka", []string{"kafka"}, none)
		broker.Register("Redis", []string{"redis", "rediss"}, none)
	})
	for _, tt := range []struct{ in, want string }{
		{"kafak://localhost:9092", `did you mean "kafka"?`},
		{"KAFKA2://localhost:9092", `did you mean "kafka"?`},
		{"redsi://localhost", `did you mean "redis"?`},
		{"Kafak", `did you mean "kafka"?`},
	} {
		_, err := broker.Resolve(tt.in)
		if !errors.Is(err, broker.ErrUnknownAdapter) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Resolve(%q) = %v, want ErrUnknownAdapter saying %s", tt.in, err, tt.want)
		}
	}
	_, err := broker.Resolve("mqtt://localhost")
	if !errors.Is(err, broker.ErrUnknownAdapter) || strings.Contains(err.Error(), "did you mean") || !strings.Contains(err.Error(), "kafka, redis, rediss") {
		t.Errorf("Resolve(mqtt://) = %v, want ErrUnknownAdapter listing the schemes and suggesting none", err)
	}
}
