package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/redis"
)

// TestStopBreaksTheBlockingRead: an idle consumer blocked in XREADGROUP
// (ReadTimeout 10s) stops at once.
func TestStopBreaksTheBlockingRead(t *testing.T) {
	needRedis(t)
	timings := crashTimings
	timings.ReadTimeout = 10 * time.Second
	name := fmt.Sprintf("stoptest%d", time.Now().UnixNano())
	a, err := redis.New(redisURL()+"?client_name="+name, redis.WithConsumerOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "idle", Channels: channels.Channels{unique("idle.topic"): channels.On(
		func(context.Context, *channels.Message) error { return nil })}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until its reader is blocked in XREADGROUP.
	c := rawClient(t)
	eventually(t, 10*time.Second, "reader blocked", func() bool {
		for _, line := range strings.Split(c.ClientList(ctx).Val(), "\n") {
			if strings.Contains(line, "name="+name+" ") && strings.Contains(line, "cmd=xreadgroup") && strings.Contains(line, "flags=b") {
				return true
			}
		}
		return false
	})
	start := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Stop took %s with a 10s blocking read", took)
	}
}
