package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	js "github.com/nats-io/nats.go/jetstream"
)

// record is what the delivery counter of JetStream (NumDelivered) cannot
// tell about one message of one group: the handler runs that failed (the
// attempt number: a delivery cut by a crash is counted by the server but
// uses up no attempt), the deliveries handed back unrun (a release naks the
// message, which the server counts as a delivery), the x-error-* headers of
// the last failure, and whether that failure was final (its dead-letter
// publish failed). Records live in a key-value bucket, written only on the
// failure path, deleted with the ack, and expire after the bucket's TTL.
type record struct {
	Failures int               `json:"f,omitempty"`
	Releases int               `json:"r,omitempty"`
	Final    bool              `json:"k,omitempty"`
	Failure  map[string]string `json:"e,omitempty"`
}

type records struct {
	kv     js.KeyValue
	prefix string // <stream>.<durable>.<consumer created>.
}

// newRecords keys the records of one consumer by its stream, its name and
// its creation time: a stream or consumer deleted and created again (its
// sequences start over) never sees the records of the one before.
func newRecords(kv js.KeyValue, stream, durable string, created time.Time) records {
	return records{kv: kv, prefix: streamRecordsPrefix(stream) + keyToken(durable) + "." +
		strconv.FormatInt(created.UnixNano(), 10) + "."}
}

// streamRecordsPrefix starts the keys of every record of a stream.
func streamRecordsPrefix(stream string) string { return keyToken(stream) + "." }

func (r records) key(seq uint64) string { return r.prefix + strconv.FormatUint(seq, 10) }

// keyToken escapes what a key-value key cannot hold (=XX hex).
func keyToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

// purgeStream deletes the records of every consumer of a stream (purging
// their subjects in the bucket's stream).
func purgeStream(ctx context.Context, j js.JetStream, bucket, stream string) error {
	st, err := j.Stream(ctx, "KV_"+bucket)
	if errors.Is(err, js.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return st.Purge(ctx, js.WithPurgeSubject("$KV."+bucket+"."+streamRecordsPrefix(stream)+">"))
}

func (r records) load(ctx context.Context, seq uint64) (record, bool, error) {
	e, err := r.kv.Get(ctx, r.key(seq))
	if errors.Is(err, js.ErrKeyNotFound) || errors.Is(err, js.ErrKeyDeleted) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return record{}, false, nil // not ours: start over
	}
	return rec, true, nil
}

func (r records) store(ctx context.Context, seq uint64, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = r.kv.Put(ctx, r.key(seq), b)
	return err
}

func (r records) remove(ctx context.Context, seq uint64) error {
	return r.kv.Purge(ctx, r.key(seq))
}

// openRecords opens (creating it when missing) the bucket of the failure
// records.
func openRecords(ctx context.Context, j js.JetStream, bucket string, ttl js.KeyValueConfig) (js.KeyValue, error) {
	kv, err := j.KeyValue(ctx, bucket)
	if errors.Is(err, js.ErrBucketNotFound) {
		cfg := ttl
		cfg.Bucket = bucket
		kv, err = j.CreateKeyValue(ctx, cfg)
		if errors.Is(err, js.ErrBucketExists) || errors.Is(err, js.ErrStreamNameAlreadyInUse) {
			kv, err = j.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("channels/jetstream: records bucket %q: %w", bucket, err)
	}
	return kv, nil
}
