package kafka

import (
	"context"
	"strconv"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// beCareful makes the partition run its first messages one at a time,
// each after a commit counting its runs (see metaRun).
func (p *partition) beCareful(headRuns int, headOff int64) {
	p.mu.Lock()
	p.careful, p.headRuns, p.headOff = max(p.s.MaxInFlight(), 1), headRuns, headOff
	if headRuns > 0 {
		p.runMeta, p.runOff = metaRun+strconv.Itoa(headRuns), headOff
		if headOff != p.pos {
			p.runMeta += ":" + strconv.FormatInt(headOff, 10)
		}
	}
	p.mu.Unlock()
}

// countRun, in careful mode, commits before d runs the number of its runs
// started (this one included), and gives the kit that count as its
// deliveries: a message whose runs kill the consumer is given up after
// MaxDeliveries. The count is committed at the partition's position: for
// the message there (run:<n>), or for a later one with its offset
// (run:<n>:<offset>) while an earlier message waits.
func (p *partition) countRun(d *delivery) {
	// The count and the generation's other commits of the partition are
	// made one after the other: a commit of the position under way never
	// lands after the count with other metadata.
	p.g.commitMu.Lock()
	defer p.g.commitMu.Unlock()
	p.mu.Lock()
	if p.careful == 0 || d.counted {
		p.mu.Unlock()
		return
	}
	p.careful--
	off := d.km.Offset
	runs := 1
	if off == p.headOff {
		runs = p.headRuns + 1
	}
	pos := p.pos
	meta := metaRun + strconv.Itoa(runs)
	if pos != off {
		meta += ":" + strconv.FormatInt(off, 10)
	}
	p.mu.Unlock()
	if pos < 0 || pos > off {
		return
	}
	err := p.g.commitOffsets(context.Background(), []kafkago.OffsetCommit{{Partition: p.id, Offset: pos, Metadata: meta}})
	if err != nil {
		p.s.log.Debug("channels/kafka: counting a run failed", "channel", p.s.ch.Name, "partition", p.id, "error", broker.Redact(err.Error()))
		return
	}
	p.mu.Lock()
	p.runMeta, p.runOff = meta, off
	p.mu.Unlock()
	p.committedAt(pos)
	d.counted = true
	d.Deliveries = runs
}

// ranCarefully commits, once a counted run is settled, the position past
// it: the count stays on the message it belongs to, never on the next
// one (which would be blamed for a crash of a later message).
func (p *partition) ranCarefully(d *delivery) {
	p.mu.Lock()
	pos, off := p.pos, d.km.Offset
	if p.runOff == off && pos > off {
		p.runMeta = ""
	}
	p.mu.Unlock()
	if pos <= off {
		return // not settled (run again here, or left for the next owner): the count stays
	}
	p.g.commit([]*partition{p}, (*partition).uncleanMeta, true)
}

// uncleanMeta is the metadata of a commit made while messages of the
// partition may still run: the run count of a counted message not settled
// yet, else live.
func (p *partition) uncleanMeta() string {
	if m := p.pendingRun(); m != "" {
		return m
	}
	return metaLive
}

// pendingRun is the run count committed for a message not settled yet
// (its offset is at or after the commit position), or "".
func (p *partition) pendingRun() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runMeta != "" && p.runOff >= p.pos {
		return p.runMeta
	}
	p.runMeta = ""
	return ""
}
