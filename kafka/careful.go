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
	p.inherited, p.headRan = true, false
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
// (run:<n>:<offset>) while an earlier message waits. False when the
// partition was closed first: d must not run, and nothing was counted.
func (p *partition) countRun(d *delivery) bool {
	// The count and the generation's other commits of the partition are
	// made one after the other: a commit of the position under way never
	// lands after the count with other metadata, and the hand-over's
	// commit, made once the partition is closed, never precedes a count.
	p.g.commitMu.Lock()
	defer p.g.commitMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	if p.careful == 0 || d.counted {
		p.mu.Unlock()
		return true
	}
	p.careful--
	off := d.km.Offset
	runs := 1
	if off == p.headOff {
		runs = p.headRuns + 1
		p.headRan = true
	}
	pos := p.pos
	meta := metaRun + strconv.Itoa(runs)
	if pos != off {
		meta += ":" + strconv.FormatInt(off, 10)
	}
	p.mu.Unlock()
	if pos < 0 || pos > off {
		return true
	}
	err := p.g.commitOffsets(context.Background(), []kafkago.OffsetCommit{{Partition: p.id, Offset: pos, Metadata: meta}})
	if err != nil {
		p.s.log.Debug("channels/kafka: counting a run failed", "channel", p.s.ch.Name, "partition", p.id, "error", broker.Redact(err.Error()))
		return true
	}
	p.mu.Lock()
	p.runMeta, p.runOff = meta, off
	p.mu.Unlock()
	p.committedAt(pos)
	d.counted = true
	d.Deliveries = runs
	return true
}

// uncountRun takes back the count of a counted run handed back unfinished
// (Release: never started, or cut by this member's own stop): the message
// is left with the runs it had before, and the next commit of the
// partition says so (headMeta). Such a run is not a crash: counting it
// would give up a healthy message after enough stops.
func (p *partition) uncountRun(d *delivery) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !d.counted {
		return
	}
	d.counted = false
	p.careful++
	off := d.km.Offset
	if off == p.headOff {
		p.headRan = false
	}
	if p.runOff == off {
		p.runMeta = ""
	}
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
// yet, else what the partition inherited and has not run yet (headMeta),
// else live.
func (p *partition) uncleanMeta() string {
	if m := p.pendingRun(); m != "" {
		return m
	}
	if m := p.headMeta(); m != "" {
		return m
	}
	return metaLive
}

// cleanMeta is the metadata of a hand-over commit made once no message of
// the partition runs: clean, unless the partition came in careful and the
// message at headOff has not run here (headMeta). The count of a run that
// ended is not kept: only a run that may still be under way (uncleanMeta)
// is counted for the next owner.
func (p *partition) cleanMeta() string {
	if m := p.headMeta(); m != "" {
		return m
	}
	return metaClean
}

// headMeta is, for a partition that came in careful (beCareful) whose
// message at headOff has not run here and is not settled, the state it
// came in with: run:<headRuns> (with the offset when the position is
// before it), or live when no run was counted. "" otherwise.
func (p *partition) headMeta() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inherited || p.headRan || p.headOff < p.pos || p.pos < 0 {
		return ""
	}
	if p.headRuns == 0 {
		return metaLive
	}
	m := metaRun + strconv.Itoa(p.headRuns)
	if p.headOff != p.pos {
		m += ":" + strconv.FormatInt(p.headOff, 10)
	}
	return m
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
