package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// go-redis has one logger per process (redis.SetLogger), which prints to
// stderr by default. The adapter routes it, once, to the logger of the
// adapter that connected last (the plugin's logger), at warn level, with
// credentials hidden.
var driverLog struct {
	once sync.Once
	l    atomic.Pointer[slog.Logger]
}

type driverLogger struct{}

func (driverLogger) Printf(ctx context.Context, format string, v ...any) {
	if l := driverLog.l.Load(); l != nil {
		l.WarnContext(ctx, "channels/redis: go-redis: "+broker.Redact(fmt.Sprintf(format, v...)))
	}
}

func routeDriverLog(l *slog.Logger) {
	driverLog.l.Store(l)
	driverLog.once.Do(func() { goredis.SetLogger(driverLogger{}) })
}
