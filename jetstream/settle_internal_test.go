package jetstream

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"
	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// fakeMsg counts the in-progress reports and naks of a delivery.
type fakeMsg struct {
	js.Msg
	mu       sync.Mutex
	progress int
	naks     int
}

func (m *fakeMsg) InProgress() error { m.mu.Lock(); m.progress++; m.mu.Unlock(); return nil }
func (m *fakeMsg) Nak() error        { m.mu.Lock(); m.naks++; m.mu.Unlock(); return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error {
	return m.Nak()
}
func (m *fakeMsg) counts() (int, int) { m.mu.Lock(); defer m.mu.Unlock(); return m.progress, m.naks }

// blockingKV holds every Put until release is closed.
type blockingKV struct {
	js.KeyValue
	entered chan struct{}
	release chan struct{}
}

func (k *blockingKV) Put(ctx context.Context, key string, v []byte) (uint64, error) {
	k.entered <- struct{}{}
	<-k.release
	return 1, nil
}

// Retry, Keep and Release report their message in progress while its
// failure record is written (a write can take seconds), and hand it back
// only after: the server does not deliver it again meanwhile.
func TestSettleReportsInProgressDuringRecordWrite(t *testing.T) {
	g := gomega.NewWithT(t)
	settles := map[string]func(*delivery) error{
		"Retry":   func(d *delivery) error { return d.Retry(context.Background(), time.Second, nil) },
		"Keep":    func(d *delivery) error { return d.Keep(context.Background(), nil) },
		"Release": func(d *delivery) error { return d.Release(context.Background()) },
	}
	for name, settle := range settles {
		kv := &blockingKV{entered: make(chan struct{}, 1), release: make(chan struct{})}
		s := &subscription{ch: &broker.Channel{Name: "c"}, log: slog.Default(), running: map[*delivery]struct{}{}, wake: make(chan struct{}, 1)}
		m := &fakeMsg{}
		d := &delivery{s: s, m: m, seq: 3, recs: records{kv: kv, prefix: "c.g.1."}, known: true}
		s.track(d)
		done := make(chan error, 1)
		go func() { done <- settle(d) }()
		g.Eventually(kv.entered).WithTimeout(5*time.Second).Should(gomega.Receive(), name+": the record write starts")
		s.reportNow() // a report due while the write runs
		if p, n := m.counts(); p != 1 || n != 0 {
			t.Fatalf("%s: during the record write: %d in-progress reports, %d naks; want 1, 0", name, p, n)
		}
		close(kv.release)
		g.Eventually(done).WithTimeout(5*time.Second).Should(gomega.Receive(gomega.BeNil()), name+" returns")
		s.reportNow()
		if p, n := m.counts(); p != 1 || n != 1 {
			t.Fatalf("%s: after the nak: %d in-progress reports, %d naks; want 1, 1", name, p, n)
		}
	}
}
