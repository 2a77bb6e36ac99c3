package kafka

import (
	"testing"

	"github.com/microchannels/channels/broker"
)

// A message of a partition closed before it started runs nowhere here: no
// run of it is counted in the commit metadata.
func TestNoRunIsCountedAfterTheClose(t *testing.T) {
	rec := &commitRecorder{}
	p := committingPartition(t, rec)
	p.beCareful(1, 0)
	if !p.s.Acquire() {
		t.Fatal("no slot")
	}
	p.close()
	if p.start(p.delivery(record(0, "", nil), nil)) {
		t.Fatal("a message started on a closed partition")
	}
	if got := rec.recorded(); len(got) != 0 {
		t.Fatalf("commits %q for a run that never started", got)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running != 0 {
		t.Fatalf("running = %d", p.running)
	}
}

// A counted run handed back by this member's own stop (Release) is not a
// crash: stop after stop, the count the next owner finds stays what the
// partition came in with, and a slow healthy message is never given up for
// MaxDeliveries.
func TestReleasedRunsAreNotCounted(t *testing.T) {
	meta := "run:2"
	for range 8 {
		rec := &commitRecorder{}
		p := committingPartition(t, rec)
		runs, off, ok := parseRun(meta, 0)
		if !ok {
			t.Fatalf("metadata %q is not a run count", meta)
		}
		p.beCareful(runs, off)
		d := p.delivery(record(0, "", nil), nil)
		p.countRun(d)
		if d.Deliveries != runs+1 {
			t.Fatalf("deliveries %d, want %d", d.Deliveries, runs+1)
		}
		p.mu.Lock()
		p.running++
		p.mu.Unlock()
		d.finished(broker.Outcome{Action: broker.Release})
		p.g.commit([]*partition{p}, (*partition).cleanMeta, true)
		got := rec.recorded()
		if len(got) != 2 {
			t.Fatalf("commits %q, want the count then the hand-over", got)
		}
		meta = got[1]
	}
	if meta != "run:2" {
		t.Fatalf("after 8 stops the next owner finds %q, want run:2", meta)
	}
}

// A clean hand-over of a partition that came in live (its previous owner
// died with messages running) keeps it live while the message at its
// position has not run here: the next owner stays careful.
func TestCleanHandOverKeepsLiveUntilTheHeadRan(t *testing.T) {
	rec := &commitRecorder{}
	p := committingPartition(t, rec)
	p.pos = 5
	p.beCareful(0, 5)
	p.g.commit([]*partition{p}, (*partition).cleanMeta, true)
	if got := rec.recorded(); len(got) != 1 || got[0] != metaLive {
		t.Fatalf("committed %q, want live", got)
	}
}
