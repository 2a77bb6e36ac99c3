package redis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// Fields of a failure record.
const (
	recordFailures = "failures"
	recordFinal    = "final"
)

// records keep, per group and message, what the delivery counter of the
// pending entry cannot tell: how many runs failed (the attempt number; a
// delivery cut by a crash is counted by Redis but uses up no attempt), the
// x-error-* headers of the last failure, and whether that failure was final
// (its dead-letter publish failed). A record is the hash
// chan:<stream>:<group>:msg:<id>, written only on the failure path, deleted
// with the ack, and expiring after ErrorInfoTTL.
type records struct {
	c      goredis.UniversalClient
	stream string
	group  string
	ttl    time.Duration
}

type record struct {
	exists   bool
	failures int
	final    bool
	failure  map[string]string
}

func (r records) key(id string) string { return "chan:" + r.stream + ":" + r.group + ":msg:" + id }

// addFailure counts one failed run and keeps its error.
func (r records) addFailure(ctx context.Context, id string, failure map[string]string) error {
	key := r.key(id)
	_, err := r.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HDel(ctx, key, errorFields...)
		p.HIncrBy(ctx, key, recordFailures, 1)
		if len(failure) > 0 {
			p.HSet(ctx, key, toAny(failure))
		}
		p.PExpire(ctx, key, r.ttl)
		return nil
	})
	return err
}

// keepFinal marks the message as failed for good with failure.
func (r records) keepFinal(ctx context.Context, id string, failure map[string]string) error {
	key := r.key(id)
	_, err := r.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HDel(ctx, key, errorFields...)
		fields := toAny(failure)
		fields[recordFinal] = "1"
		p.HSet(ctx, key, fields)
		p.PExpire(ctx, key, r.ttl)
		return nil
	})
	return err
}

// load reads the record of a claimed message (the zero record when none).
func (r records) load(ctx context.Context, id string) (record, error) {
	h, err := r.c.HGetAll(ctx, r.key(id)).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return record{}, err
	}
	if len(h) == 0 {
		return record{}, nil
	}
	rec := record{exists: true, final: h[recordFinal] == "1"}
	if n, err := strconv.Atoi(h[recordFailures]); err == nil && n > 0 {
		rec.failures = n
	}
	for k, v := range h {
		if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
			if rec.failure == nil {
				rec.failure = map[string]string{}
			}
			rec.failure[k] = v
		}
	}
	return rec, nil
}

// errorFields are the x-error-* fields a record may hold, cleared before a
// newer failure is written.
var errorFields = []string{broker.HeaderErrorMessage, broker.HeaderErrorCode, broker.HeaderErrorStack,
	broker.HeaderErrorType, broker.HeaderErrorData, broker.HeaderErrorName, broker.HeaderErrorRetryable,
	broker.HeaderErrorTimestamp, broker.HeaderErrorTrimmed, broker.HeaderDeadLetterRefusals,
	broker.HeaderDeadLetterRefusal, broker.HeaderDeadLetterRefusedSince}

func toAny(h map[string]string) map[string]any {
	out := make(map[string]any, len(h)+1)
	for k, v := range h {
		out[k] = v
	}
	return out
}
