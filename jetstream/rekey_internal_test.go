package jetstream

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// seqMsg is a redelivered message of a consumer sequence.
type seqMsg struct {
	fakeMsg
	cseq, sseq uint64
}

func (m *seqMsg) Metadata() (*js.MsgMetadata, error) {
	return &js.MsgMetadata{Sequence: js.SequencePair{Consumer: m.cseq, Stream: m.sseq}, NumDelivered: 2}, nil
}
func (m *seqMsg) Data() []byte         { return nil }
func (m *seqMsg) Headers() nats.Header { return nil }

// keysKV records the keys written; it holds no record.
type keysKV struct {
	js.KeyValue
	mu   sync.Mutex
	keys []string
}

func (k *keysKV) Get(context.Context, string) (js.KeyValueEntry, error) {
	return nil, js.ErrKeyNotFound
}
func (k *keysKV) Put(_ context.Context, key string, _ []byte) (uint64, error) {
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
	return 1, nil
}

// infoConsumer is a consumer whose reads report it created at created.
type infoConsumer struct {
	js.Consumer
	created time.Time
}

func (c *infoConsumer) Info(context.Context) (*js.ConsumerInfo, error) {
	return &js.ConsumerInfo{Created: c.created, Config: js.ConsumerConfig{AckWait: 30 * time.Second}}, nil
}

// A consumer created again is seen by a consumer sequence going back; a
// message that arrived after that one, but before the consumer was read,
// is keyed by the new consumer's records too (its record written under
// the old consumer's key would be lost to the new one, and its dead
// letter id repeat an old one).
func TestLaterArrivalsKeyedByRecreatedConsumer(t *testing.T) {
	old, created := time.Unix(1000, 0), time.Unix(2000, 0)
	kv := &keysKV{}
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1}
	s := &subscription{Consumer: kit.NewConsumer(ch), ch: ch, log: slog.Default(), running: map[*delivery]struct{}{},
		wake: make(chan struct{}, 1), fetchCtx: context.Background(), stream: "S",
		cons: &infoConsumer{created: created}, recs: newRecords(kv, "S", "g", old), created: old}
	s.info.Store(&js.ConsumerInfo{Created: old, Config: js.ConsumerConfig{AckWait: 30 * time.Second}})
	s.interval.Store(int64(10 * time.Second))
	s.lastCseq.Store(10)
	// Held messages are handed back (released, their record written) at
	// once: the consumer is draining.
	_ = s.Consumer.Drain(context.Background(), kit.DrainHooks{})
	first := s.delivery(&seqMsg{cseq: 1, sseq: 5}) // the consumer sequence goes back
	later := s.delivery(&seqMsg{cseq: 2, sseq: 6}) // arrives before the consumer is read
	s.holdBatch([]*delivery{first})
	s.holdBatch([]*delivery{later})
	want := newRecords(kv, "S", "g", created).prefix
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if len(kv.keys) != 2 {
		t.Fatalf("records written: %v, want 2", kv.keys)
	}
	for _, k := range kv.keys {
		if !strings.HasPrefix(k, want) {
			t.Fatalf("record %q is not keyed by the consumer created again (%q); written: %v", k, want, kv.keys)
		}
	}
}

// A consumer created again whose sequences never went back below the
// last one seen (and whose CREATED advisory was missed) is found by a
// read of the consumer (the slow refresh): its Created time is newer, and
// the messages held from then on are keyed by its records.
func TestRecordsFollowNewerCreatedOnRead(t *testing.T) {
	old, created := time.Unix(1000, 0), time.Unix(2000, 0)
	kv := &keysKV{}
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1}
	s := &subscription{Consumer: kit.NewConsumer(ch), ch: ch, log: slog.Default(), running: map[*delivery]struct{}{},
		wake: make(chan struct{}, 1), fetchCtx: context.Background(), stream: "S",
		cons: &infoConsumer{created: created}, recs: newRecords(kv, "S", "g", old), created: old}
	s.info.Store(&js.ConsumerInfo{Created: old, Config: js.ConsumerConfig{AckWait: 30 * time.Second}})
	s.interval.Store(int64(10 * time.Second))
	_ = s.Consumer.Drain(context.Background(), kit.DrainHooks{})
	d := s.delivery(&seqMsg{cseq: 1, sseq: 5}) // the first sequence seen: nothing went back
	s.refresh()                                // as the slow interval does
	s.holdBatch([]*delivery{d})
	want := newRecords(kv, "S", "g", created).prefix
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if len(kv.keys) != 1 || !strings.HasPrefix(kv.keys[0], want) {
		t.Fatalf("records written %v, want one keyed by %q", kv.keys, want)
	}
}
