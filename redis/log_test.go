package redis_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/redis"
)

// TestDriverLogsGoThroughTheAdapterLogger: go-redis's own log lines (here:
// dial failures) reach the plugin's logger, without the password.
func TestDriverLogsGoThroughTheAdapterLogger(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	a, err := redis.New("redis://:s3cret@" + dead + "/0?dial_timeout=200ms")
	if err != nil {
		t.Fatal(err)
	}
	var buf channelstest.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{Logger: logger}); err == nil {
		t.Fatal("connected to a dead port")
	}
	out := buf.String()
	if !strings.Contains(out, "go-redis") || !strings.Contains(out, "level=WARN") || strings.Contains(out, "s3cret") {
		t.Fatalf("driver log lines: %q", out)
	}
}
