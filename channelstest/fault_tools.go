package channelstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// tally is the outcome of a scenario, by message.
type tally struct {
	sent, processed, duplicates, deadLettered, lost int
}

// count compares the sequence numbers sent with the processing runs and the
// dead-lettered sequence numbers. processed counts distinct messages;
// duplicates counts runs beyond the first of a message; lost counts
// messages sent but never processed (dead-lettered ones included: the
// scenarios' handlers never fail on valid messages).
func count(sent []int, runs []processed, dead []int) tally {
	t := tally{sent: len(sent)}
	want := make(map[int]bool, len(sent))
	for _, s := range sent {
		want[s] = true
	}
	seen := map[int]int{}
	for _, r := range runs {
		if want[r.seq] {
			seen[r.seq]++
		}
	}
	for _, n := range seen {
		t.processed++
		t.duplicates += n - 1
	}
	deadSeen := map[int]bool{}
	for _, s := range dead {
		if want[s] {
			deadSeen[s] = true
		}
	}
	t.deadLettered = len(deadSeen)
	t.lost = t.sent - t.processed
	return t
}

func (t tally) print(scenario, target, details string) {
	line := fmt.Sprintf("fault %s %s: sent=%d processed=%d duplicates=%d dead-lettered=%d lost=%d",
		scenario, target, t.sent, t.processed, t.duplicates, t.deadLettered, t.lost)
	if details != "" {
		line += " " + details
	}
	report("%s", line)
}

// distinctSeqs counts the distinct sequence numbers of runs.
func distinctSeqs(runs []processed) int {
	m := map[int]bool{}
	for _, r := range runs {
		m[r.seq] = true
	}
	return len(m)
}

// settle polls until done, or until progress has not moved for quiet (what
// is missing is not coming), or until limit; it never fails by itself, so
// the scenario can print its line before asserting.
func settle(done func() bool, progress func() int, quiet, limit time.Duration) {
	GinkgoHelper()
	start, last, since := time.Now(), -1, time.Now()
	Eventually(func() bool {
		if n := progress(); n != last {
			last, since = n, time.Now()
		}
		return done() || time.Since(since) > quiet || time.Since(start) > limit
	}).WithTimeout(limit + 10*time.Second).WithPolling(20 * time.Millisecond).Should(BeTrue())
}

// quietFor waits until progress has not moved for quiet (late
// redeliveries, duplicates), at most limit.
func quietFor(progress func() int, quiet, limit time.Duration) {
	GinkgoHelper()
	settle(func() bool { return false }, progress, quiet, limit)
}

// seqRecorder is an in-process handler that records faultPayload runs.
type seqRecorder struct {
	work      time.Duration
	honourCtx bool // end the work early when the handler's context ends (and record nothing)
	atStart   bool // record when the handler starts (to catch a second concurrent run)

	running atomic.Int32
	mu      sync.Mutex
	runs    []processed
}

func (r *seqRecorder) handler(by string) broker.Handler {
	return func(ctx context.Context, m *broker.Message) error {
		var p faultPayload
		if err := m.Decode(&p); err != nil {
			return err
		}
		r.running.Add(1)
		defer r.running.Add(-1)
		rec := func() {
			r.mu.Lock()
			r.runs = append(r.runs, processed{seq: p.Seq, id: m.ID, attempt: m.Attempt, by: by})
			r.mu.Unlock()
		}
		if r.atStart {
			rec()
		}
		workCtx := ctx
		if !r.honourCtx {
			workCtx = context.WithoutCancel(ctx)
		}
		if err := SimulateWork(workCtx, r.work); err != nil {
			return err
		}
		if !r.atStart {
			rec()
		}
		return nil
	}
}

func (r *seqRecorder) all() []processed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]processed(nil), r.runs...)
}

func (r *seqRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

// deadRecorder consumes a dead-letter queue without decoding payloads.
type deadRecorder struct {
	mu   sync.Mutex
	msgs []*broker.Message
}

func (d *deadRecorder) handle(_ context.Context, m *broker.Message) error {
	cp := *m
	d.mu.Lock()
	d.msgs = append(d.msgs, &cp)
	d.mu.Unlock()
	return nil
}

func (d *deadRecorder) all() []*broker.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*broker.Message(nil), d.msgs...)
}

func (d *deadRecorder) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.msgs)
}

// seqs are the sequence numbers of the dead letters that carry one.
func (d *deadRecorder) seqs() []int {
	var out []int
	for _, m := range d.all() {
		var p faultPayload
		if m.Decode(&p) == nil {
			out = append(out, p.Seq)
		}
	}
	return out
}

// hostileCase is one entry a third-party producer may write.
type hostileCase struct {
	name  string
	entry RawEntry
	// mayProcess: the entry carries a valid payload and headers that decode
	// leniently, so running the handler is a correct outcome too.
	mayProcess bool
	// leadingMsgPackValue: the first byte is a complete MsgPack value (a
	// positive fixint) and the MsgPack decoder ignores trailing bytes, so
	// under MsgPack the handler may run (reported as such).
	leadingMsgPackValue bool
}

// hostileCases are the hostile entries, bombs last: consumed with
// MaxInFlight 1 (FIFO), the first entry left unaccounted when the consumer
// dies is the one that killed it.
func hostileCases(ser broker.Serializer) []hostileCase {
	must := func(b []byte, err error) []byte {
		if err != nil {
			panic(err)
		}
		return b
	}
	valid := must(ser.Marshal(faultPayload{Seq: -1}))
	return []hostileCase{
		{name: "payload-not-json", leadingMsgPackValue: true, entry: RawEntry{Payload: []byte(`{"seq": 1,`)}},
		{name: "payload-msgpack-garbage", entry: RawEntry{Payload: []byte{0xc1, 0xc1, 0xc1, 0xc1}}},
		{name: "payload-binary-junk", leadingMsgPackValue: true, entry: RawEntry{Payload: []byte("\x00\xff\xfe\x80\x81junk\x00\x01\x02")}},
		{name: "payload-empty", entry: RawEntry{Payload: []byte{}}},
		{name: "no-payload-field", entry: RawEntry{NoPayload: true}},
		{name: "headers-not-a-map", entry: RawEntry{Payload: valid, Headers: must(ser.Marshal([]int{1, 2, 3}))}},
		{name: "headers-non-string-values", mayProcess: true, entry: RawEntry{Payload: valid, Headers: must(ser.Marshal(
			map[string]any{"n": 1, "list": []int{1, 2}, "obj": map[string]any{"a": "b"}, "nil": nil, "ok": "v"}))}},
		{name: "headers-invalid-bytes", entry: RawEntry{Payload: valid, Headers: []byte("\xff\x00{not headers")}},
		{name: "headers-empty", entry: RawEntry{Payload: valid, Headers: []byte{}}},
		{name: "headers-bad-context-header", entry: RawEntry{Payload: valid, Headers: must(ser.Marshal(map[string]string{"$meta": "%%% not base64"}))}},
		{name: "payload-deep-nesting", leadingMsgPackValue: true, entry: RawEntry{Payload: append(bytes.Repeat([]byte("["), 100000), bytes.Repeat([]byte{0x91}, 100000)...)}},
		{name: "payload-bin32-huge-length", entry: RawEntry{Payload: []byte{0xc6, 0xff, 0xff, 0xff, 0xff}}},
		{name: "payload-str32-huge-length", entry: RawEntry{Payload: []byte{0xdb, 0xff, 0xff, 0xff, 0xff}}},
		{name: "payload-array32-huge-length", entry: RawEntry{Payload: []byte{0xdd, 0xff, 0xff, 0xff, 0xff}}},
		{name: "payload-map32-huge-length", entry: RawEntry{Payload: []byte{0xdf, 0xff, 0xff, 0xff, 0xff}}},
		{name: "headers-map32-huge-length", entry: RawEntry{Payload: valid, Headers: []byte{0xdf, 0xff, 0xff, 0xff, 0xff}}},
		{name: "headers-nested-map32-huge-length", entry: RawEntry{Payload: valid, Headers: []byte{0x81, 0xa1, 'k', 0xdf, 0xff, 0xff, 0xff, 0xff}}},
		{name: "headers-nested-array32-huge-length", entry: RawEntry{Payload: valid, Headers: []byte{0x81, 0xa1, 'k', 0xdd, 0xff, 0xff, 0xff, 0xff}}},
	}
}

// report prints a fault line where `make test` shows it: on stdout (go test
// -v, or a failing package), in the spec's output, and appended to the file
// named by CHANNELS_FAULT_REPORT (the Makefile prints it after the run).
func report(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stdout, line)
	fmt.Fprintln(GinkgoWriter, line)
	if path := os.Getenv("CHANNELS_FAULT_REPORT"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}
