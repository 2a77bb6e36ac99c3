package redis

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/redis"
)

func needRedis(t *testing.T) {
	t.Helper()
	brokerenv.Need(t, "redis", brokerenv.PingRedis)
}

func unique(base string) string {
	return fmt.Sprintf("%s.%d.%d", base, os.Getpid(), time.Now().UnixNano())
}

// startPlugin starts a plugin on the test Redis with the given consumer
// timings and schema, and stops it at the end of the test.
func startPlugin(t *testing.T, timings redis.ChannelOptions, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	return startPluginAt(t, brokerenv.RedisURL(), timings, schema, opts...)
}

// startPluginAt is startPlugin on the Redis at url.
func startPluginAt(t *testing.T, url string, timings redis.ChannelOptions, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	a, err := redis.New(url, redis.WithConsumerOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(a)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
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

// consistently fails if cond turns false during d.
func consistently(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Consistently(cond).WithTimeout(d).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}

type service struct {
	Name          string
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

func redisURL() string { return brokerenv.RedisURL() }
