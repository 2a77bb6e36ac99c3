package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/memory"
)

const queue = "ns.FAILED_MESSAGES"

func connected(t *testing.T) *memory.Adapter {
	t.Helper()
	a := memory.New(memory.WithBus(memory.NewBus()))
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

// deadLetter writes a dead letter as the plugin does: the headers of
// broker.DeadLetterHeaders, sent to the queue.
func deadLetter(t *testing.T, a broker.Adapter, channel, group string, attempt int, cause error, payload string, extra map[string]string) {
	t.Helper()
	msg := &broker.Message{Channel: channel, Group: group, ID: "orig-1", Attempt: attempt, Headers: extra}
	h := broker.DeadLetterHeaders(msg, cause, time.Now())
	h["x-channels-unfinished"] = "1" // an adapter's own header
	if err := a.Publish(context.Background(), queue, &broker.Outgoing{Payload: []byte(payload), Headers: h}); err != nil {
		t.Fatal(err)
	}
}

// handled subscribes a group to channel and returns what it receives.
func handled(t *testing.T, a *memory.Adapter, channel string) chan *broker.Message {
	t.Helper()
	got := make(chan *broker.Message, 100)
	sub, err := a.Subscribe(context.Background(), &broker.Channel{Name: channel, Group: "g", Handler: func(_ context.Context, m *broker.Message) error {
		got <- m
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	sub.Start()
	t.Cleanup(func() { _ = sub.Drain(context.Background()) })
	return got
}

func receive(t *testing.T, ch chan *broker.Message) *broker.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

func ids(es []dlq.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestListReadsAndFilters(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	deadLetter(t, a, "ns.orders", "billing", 3, errors.New("card declined"), `{"id":1}`, nil)
	deadLetter(t, a, "ns.users", "mail", 1, errors.New("smtp down"), `{"id":2}`, nil)
	// A dead letter of @moleculer/channels 0.1.8: no error, no count.
	if err := a.Publish(ctx, queue, &broker.Outgoing{Payload: []byte(`{"id":3}`),
		Headers: map[string]string{"x-original-channel": "ns.orders", "x-original-group": "old"}}); err != nil {
		t.Fatal(err)
	}

	all, err := dlq.List(ctx, a, queue, dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("list: %+v", all)
	}
	e := all[0]
	if e.OriginalChannel != "ns.orders" || e.OriginalGroup != "billing" || e.ErrorMessage != "card declined" ||
		e.ErrorName != "Error" || e.Attempts != 3 || e.ID == "" || string(e.Payload) != `{"id":1}` {
		t.Fatalf("entry: %+v", e)
	}
	if time.Since(e.Time) > time.Minute {
		t.Fatalf("time: %v", e.Time)
	}
	old := all[2]
	if old.OriginalChannel != "ns.orders" || old.OriginalGroup != "old" || old.ErrorMessage != "" || old.Attempts != 0 || old.Time.IsZero() {
		t.Fatalf("0.1.8 entry: %+v", old)
	}

	for _, c := range []struct {
		f    dlq.Filter
		want []string
	}{
		{dlq.Filter{Channel: "ns.orders"}, []string{all[0].ID, all[2].ID}},
		{dlq.Filter{ErrorContains: "SMTP"}, []string{all[1].ID}},
		{dlq.Filter{ErrorContains: "error"}, []string{all[0].ID, all[1].ID}}, // the name
		{dlq.Filter{IDs: []string{all[2].ID, "nope"}}, []string{all[2].ID}},
		{dlq.Filter{Limit: 2}, []string{all[0].ID, all[1].ID}},
		{dlq.Filter{Since: time.Now().Add(time.Hour)}, nil},
		{dlq.Filter{Since: time.Now().Add(-time.Hour), Channel: "ns.users"}, []string{all[1].ID}},
	} {
		got, err := dlq.List(ctx, a, queue, c.f)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids(got)) != fmt.Sprint(c.want) {
			t.Errorf("filter %+v: got %v, want %v", c.f, ids(got), c.want)
		}
	}
	if _, err := dlq.Get(ctx, a, queue, "nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	// Listing took nothing.
	if again, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(again) != 3 {
		t.Fatalf("list took messages: %d left", len(again))
	}
}

func TestReplaySendsBackAsFirstAttempt(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	orders := handled(t, a, "ns.orders")
	payload := "\x00\x01 not json" // bytes are resent as they are
	deadLetter(t, a, "ns.orders", "billing", 4, errors.New("boom"), payload, map[string]string{"user": "kept", "$requestID": "r1"})
	deadLetter(t, a, "ns.users", "mail", 1, errors.New("other"), "x", nil)

	dry, err := dlq.Replay(ctx, a, queue, dlq.Filter{Channel: "ns.orders"}, dlq.ReplayOptions{DryRun: true})
	if err != nil || len(dry.Entries) != 1 || dry.Sent != 0 || dry.Removed != 0 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	if n, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(n) != 2 {
		t.Fatalf("dry run removed: %d left", len(n))
	}
	select {
	case m := <-orders:
		t.Fatalf("dry run sent %+v", m)
	case <-time.After(50 * time.Millisecond):
	}

	var progress []string
	res, err := dlq.Replay(ctx, a, queue, dlq.Filter{Channel: "ns.orders"}, dlq.ReplayOptions{
		Progress: func(done, total int) { progress = append(progress, fmt.Sprintf("%d/%d", done, total)) }})
	if err != nil || res.Sent != 1 || res.Removed != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if fmt.Sprint(progress) != "[1/1]" {
		t.Fatalf("progress: %v", progress)
	}
	m := receive(t, orders)
	if string(m.Payload) != payload || m.Attempt != 1 {
		t.Fatalf("replayed: %q attempt %d", m.Payload, m.Attempt)
	}
	for k := range m.Headers {
		if strings.HasPrefix(k, "x-error-") || strings.HasPrefix(k, "x-original-") || k == "x-redelivered-count" || strings.HasPrefix(k, "x-channels-") {
			t.Errorf("replayed copy has %s", k)
		}
	}
	if m.Headers["user"] != "kept" || m.Headers["$requestID"] != "r1" {
		t.Fatalf("user headers: %v", m.Headers)
	}
	trail := dlq.ParseTrail(m.Headers[dlq.HeaderReplayedFrom])
	if len(trail) != 1 || trail[0].Queue != queue || trail[0].ID != res.Entries[0].ID || trail[0].Error != "Error: boom" || trail[0].At == "" {
		t.Fatalf("trail: %q", m.Headers[dlq.HeaderReplayedFrom])
	}
	left, _ := dlq.List(ctx, a, queue, dlq.Filter{})
	if len(left) != 1 || left[0].OriginalChannel != "ns.users" {
		t.Fatalf("left: %+v", left)
	}

	// Replayed to another channel, with the trail of the first replay kept.
	h := broker.DeadLetterHeaders(&broker.Message{Channel: "ns.orders", Group: "billing", Attempt: 1, Headers: m.Headers}, errors.New("again"), time.Now())
	if err := a.Publish(ctx, queue, &broker.Outgoing{Payload: m.Payload, Headers: h}); err != nil {
		t.Fatal(err)
	}
	other := handled(t, a, "ns.retry")
	if _, err := dlq.Replay(ctx, a, queue, dlq.Filter{ErrorContains: "again"}, dlq.ReplayOptions{To: "ns.retry"}); err != nil {
		t.Fatal(err)
	}
	m2 := receive(t, other)
	trail = dlq.ParseTrail(m2.Headers[dlq.HeaderReplayedFrom])
	if len(trail) != 2 || trail[0].Error != "Error: boom" || trail[1].Error != "Error: again" {
		t.Fatalf("second trail: %q", m2.Headers[dlq.HeaderReplayedFrom])
	}
}

func TestReplayWithoutDestination(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	if err := a.Publish(ctx, queue, &broker.Outgoing{Payload: []byte("x"), Headers: map[string]string{"x-error-message": "m"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{}); !errors.Is(err, dlq.ErrNoDestination) {
		t.Fatalf("replay without destination: %v", err)
	}
	if left, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(left) != 1 {
		t.Fatalf("left %d", len(left))
	}
}

// failing is the memory adapter with sends or removals that fail from the
// n-th on: what a broker going away in the middle of a replay does.
type failing struct {
	*memory.Adapter
	publishOK, removeOK int
}

var errDown = errors.New("broker went away")

func (f *failing) Publish(ctx context.Context, ch string, m *broker.Outgoing) error {
	if f.publishOK == 0 {
		return errDown
	}
	f.publishOK--
	return f.Adapter.Publish(ctx, ch, m)
}

func (f *failing) RemoveDeadLetters(ctx context.Context, q string, ids ...string) (int, error) {
	if f.removeOK == 0 {
		return 0, errDown
	}
	f.removeOK--
	return f.Adapter.RemoveDeadLetters(ctx, q, ids...)
}

func TestReplayNeverLosesAMessage(t *testing.T) {
	ctx := context.Background()
	t.Run("send fails", func(t *testing.T) {
		a := connected(t)
		got := handled(t, a, "ns.orders")
		for i := range 3 {
			deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), fmt.Sprint(i), nil)
		}
		f := &failing{Adapter: a, publishOK: 1, removeOK: 100}
		res, err := dlq.Replay(ctx, f, queue, dlq.Filter{}, dlq.ReplayOptions{})
		if !errors.Is(err, errDown) || res.Sent != 1 || res.Removed != 1 {
			t.Fatalf("replay: %+v %v", res, err)
		}
		if m := receive(t, got); string(m.Payload) != "0" {
			t.Fatalf("sent %q", m.Payload)
		}
		left, _ := dlq.List(ctx, a, queue, dlq.Filter{})
		if fmt.Sprint(payloads(left)) != "[1 2]" {
			t.Fatalf("left: %v", payloads(left))
		}
	})
	t.Run("remove fails", func(t *testing.T) {
		a := connected(t)
		got := handled(t, a, "ns.orders")
		deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "0", nil)
		f := &failing{Adapter: a, publishOK: 100, removeOK: 0}
		res, err := dlq.Replay(ctx, f, queue, dlq.Filter{}, dlq.ReplayOptions{})
		if !errors.Is(err, errDown) || res.Sent != 1 || res.Removed != 0 {
			t.Fatalf("replay: %+v %v", res, err)
		}
		receive(t, got)
		// Sent and still held: a second replay sends it again (a duplicate,
		// never a loss).
		if left, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(left) != 1 {
			t.Fatalf("left %d", len(left))
		}
	})
}

func payloads(es []dlq.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, string(e.Payload))
	}
	return out
}

func TestPurgeAndMove(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	deadLetter(t, a, "ns.orders", "g", 2, errors.New("timeout"), "1", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("bad input"), "2", nil)
	deadLetter(t, a, "ns.users", "g", 1, errors.New("timeout"), "3", nil)

	n, err := dlq.Purge(ctx, a, queue, dlq.Filter{Channel: "ns.orders", ErrorContains: "timeout"})
	if err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	left, _ := dlq.List(ctx, a, queue, dlq.Filter{})
	if fmt.Sprint(payloads(left)) != "[2 3]" {
		t.Fatalf("after purge: %v", payloads(left))
	}

	res, err := dlq.Move(ctx, a, queue, dlq.Filter{Channel: "ns.users"}, "ns.PARKED")
	if err != nil || res.Sent != 1 || res.Removed != 1 {
		t.Fatalf("move: %+v %v", res, err)
	}
	parked, _ := dlq.List(ctx, a, "ns.PARKED", dlq.Filter{})
	if len(parked) != 1 || parked[0].OriginalChannel != "ns.users" || parked[0].ErrorMessage != "timeout" || parked[0].Attempts != 1 {
		t.Fatalf("moved: %+v", parked)
	}
	if _, ok := parked[0].Headers["x-channels-unfinished"]; ok {
		t.Fatal("move kept an adapter's own header")
	}
	if _, err := dlq.MoveWith(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("move without destination: %v", err)
	}
}

// bare is an adapter with none of the operations abilities.
type bare struct{ broker.Adapter }

func TestUnsupported(t *testing.T) {
	a := bare{connected(t)}
	ctx := context.Background()
	check := func(what string, err error, ability string) {
		t.Helper()
		if !errors.Is(err, broker.ErrUnsupported) || !strings.Contains(err.Error(), "Memory") || !strings.Contains(err.Error(), ability) {
			t.Errorf("%s: %v", what, err)
		}
	}
	_, err := dlq.List(ctx, a, queue, dlq.Filter{})
	check("list", err, "dead-letter store")
	_, err = dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{})
	check("replay", err, "dead-letter store")
	_, err = dlq.Purge(ctx, a, queue, dlq.Filter{})
	check("purge", err, "dead-letter store")
	_, err = dlq.Channels(ctx, a, "")
	check("channels", err, "channel listing")
	check("tail", dlq.Tail(ctx, a, "c", func(*broker.StoredMessage) bool { return true }), "tail")
	check("rm", dlq.RemoveMessage(ctx, a, "c", "1"), "message removal")
}

func TestChannelsTailRemove(t *testing.T) {
	a := connected(t)
	ctx := context.Background()
	_ = a.Publish(ctx, "ns.a", &broker.Outgoing{Payload: []byte("1")})
	_ = a.Publish(ctx, "other.b", &broker.Outgoing{Payload: []byte("1")})
	cs, err := dlq.Channels(ctx, a, "ns")
	if err != nil || len(cs) != 1 || cs[0].Name != "ns.a" {
		t.Fatalf("channels: %+v %v", cs, err)
	}
	held, _ := dlq.List(ctx, a, "ns.a", dlq.Filter{})
	if err := dlq.RemoveMessage(ctx, a, "ns.a", held[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := dlq.RemoveMessage(ctx, a, "ns.a", held[0].ID); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	go func() { // a paced producer: the tail starts on its own time
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = a.Publish(ctx, "ns.a", &broker.Outgoing{Payload: []byte("live")})
			select {
			case <-tctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var seen string
	if err := dlq.Tail(tctx, a, "ns.a", func(m *broker.StoredMessage) bool { seen = string(m.Payload); return false }); err != nil {
		t.Fatal(err)
	}
	if seen != "live" {
		t.Fatalf("tail saw %q", seen)
	}
}

func TestReplayHeadersBounded(t *testing.T) {
	var prev []dlq.Trail
	for i := range 100 {
		prev = append(prev, dlq.Trail{Queue: queue, ID: fmt.Sprint(i), Error: strings.Repeat("e", 200), At: "2026-01-01T00:00:00Z"})
	}
	e := dlq.Entry{ID: "new", ErrorName: "Error", ErrorMessage: strings.Repeat("m", 5000),
		Headers: map[string]string{dlq.HeaderReplayedFrom: mustJSON(t, prev), "x-error-message": "m"}}
	h := dlq.ReplayHeaders(queue, e, time.Now(), broker.Limits{})
	v := h[dlq.HeaderReplayedFrom]
	if len(v) > dlq.MaxTrail {
		t.Fatalf("trail of %d bytes", len(v))
	}
	tr := dlq.ParseTrail(v)
	if len(tr) < 2 || tr[len(tr)-1].ID != "new" || tr[len(tr)-2].ID != "99" || len(tr[len(tr)-1].Error) > 300 {
		t.Fatalf("trail: %d records, last %+v", len(tr), tr[len(tr)-1])
	}
	// A broker with small header limits gets the newest record only, then
	// without its error.
	small := broker.Limits{MaxHeaderBytes: 120}
	h = dlq.ReplayHeaders(queue, e, time.Now(), small)
	if tr := dlq.ParseTrail(h[dlq.HeaderReplayedFrom]); len(tr) != 1 || tr[0].ID != "new" || tr[0].Error != "" {
		t.Fatalf("small limits: %q", h[dlq.HeaderReplayedFrom])
	}
	// A trail that is not one is replaced.
	e.Headers[dlq.HeaderReplayedFrom] = "garbage"
	if tr := dlq.ParseTrail(dlq.ReplayHeaders(queue, e, time.Now(), broker.Limits{})[dlq.HeaderReplayedFrom]); len(tr) != 1 {
		t.Fatalf("garbage trail: %+v", tr)
	}
}

func mustJSON(t *testing.T, v []dlq.Trail) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFormatPayload(t *testing.T) {
	mp, err := msgpack.Marshal(map[string]any{"id": 7, "tags": []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in     []byte
		format string
		has    string
	}{
		{[]byte(`{"id":7}`), dlq.FormatJSON, "{\n  \"id\": 7\n}"},
		{mp, dlq.FormatMsgPack, `"id": 7`},
		{[]byte("plain text"), dlq.FormatText, `"plain text"`},
		{[]byte{0xff, 0x00, 0xfe}, dlq.FormatBinary, "ff 00 fe"},
		{[]byte{0x81, 0xa1}, dlq.FormatBinary, "81 a1"}, // a truncated MessagePack map
	} {
		f, text := dlq.FormatPayload(c.in, 0)
		if f != c.format || !strings.Contains(text, c.has) {
			t.Errorf("%q: %s %q", c.in, f, text)
		}
	}
	f, text := dlq.FormatPayload([]byte(`{"long":"`+strings.Repeat("x", 100)+`"}`), 10)
	if f != dlq.FormatText || !strings.Contains(text, "111 bytes in all, the first 10 shown") || strings.Contains(text, "xxxxxxxxxxx") {
		t.Errorf("cut: %s %q", f, text)
	}
}

// recording is the memory adapter that records the options of each send.
type recording struct {
	*memory.Adapter
	mu   sync.Mutex
	sent []broker.PublishOptions
}

func (r *recording) Publish(ctx context.Context, ch string, m *broker.Outgoing) error {
	r.mu.Lock()
	r.sent = append(r.sent, m.Options)
	r.mu.Unlock()
	return r.Adapter.Publish(ctx, ch, m)
}

func TestResendAsksForARoutedSend(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "1", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "2", nil)
	r := &recording{Adapter: a}
	if _, err := dlq.Replay(ctx, r, queue, dlq.Filter{Limit: 1}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.Move(ctx, r, queue, dlq.Filter{}, "ns.PARKED"); err != nil {
		t.Fatal(err)
	}
	if len(r.sent) != 2 {
		t.Fatalf("sent %d", len(r.sent))
	}
	for i, o := range r.sent {
		if !o.Routed || !o.Raw {
			t.Errorf("send %d: %+v, want Routed and Raw", i, o)
		}
	}
}

// unreadable is the memory adapter listing some dead letters as an
// adapter does when it cannot read them whole: the payload "undecodable"
// with headers that did not decode (Redis with another serializer), the
// payload "cut" with a part of its headers (Kafka).
type unreadable struct{ *memory.Adapter }

func (u unreadable) BrowseDeadLetters(ctx context.Context, q string, fn func(*broker.StoredMessage) bool) error {
	return u.Adapter.BrowseDeadLetters(ctx, q, func(m *broker.StoredMessage) bool {
		switch string(m.Payload) {
		case "undecodable":
			m.Headers, m.DecodeError = nil, "msgpack: invalid code"
		case "cut":
			m.Headers["x-channels-headers-cut"] = "3 of 70 headers left out"
		}
		return fn(m)
	})
}

func TestUnreadableIsNotResentUnlessForced(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	u := unreadable{a}
	got := handled(t, a, "ns.retry")
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "undecodable", map[string]string{"trace": "t1"})
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "cut", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "fine", nil)

	es, err := dlq.List(ctx, u, queue, dlq.Filter{})
	if err != nil || len(es) != 3 || es[0].DecodeError != "msgpack: invalid code" ||
		!strings.Contains(es[1].DecodeError, "headers cut") || es[2].DecodeError != "" {
		t.Fatalf("list: %+v %v", es, err)
	}
	for _, move := range []bool{false, true} {
		var res dlq.ReplayResult
		if move {
			res, err = dlq.Move(ctx, u, queue, dlq.Filter{}, "ns.retry")
		} else {
			res, err = dlq.Replay(ctx, u, queue, dlq.Filter{}, dlq.ReplayOptions{To: "ns.retry"})
		}
		if !errors.Is(err, dlq.ErrUnreadable) || res.Sent != 0 || res.Removed != 0 {
			t.Fatalf("move %v: %+v %v", move, res, err)
		}
		if st := []dlq.Status{res.Outcomes[0].Status, res.Outcomes[1].Status, res.Outcomes[2].Status}; fmt.Sprint(st) != "[refused refused pending]" {
			t.Fatalf("move %v: outcomes %v", move, res.Outcomes)
		}
		if left, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(left) != 3 {
			t.Fatalf("move %v: left %d", move, len(left))
		}
	}
	res, err := dlq.Replay(ctx, u, queue, dlq.Filter{}, dlq.ReplayOptions{To: "ns.retry", Force: true})
	if err != nil || res.Sent != 3 || res.Removed != 3 {
		t.Fatalf("forced: %+v %v", res, err)
	}
	if m := receive(t, got); string(m.Payload) != "undecodable" || m.Headers["trace"] != "" {
		t.Fatalf("forced: %+v", m)
	}
}

// keeping is the memory adapter whose removals remove nothing and say so.
type keeping struct{ *memory.Adapter }

func (keeping) RemoveDeadLetters(context.Context, string, ...string) (int, error) { return 0, nil }

func TestSentButNotRemovedIsAnError(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "1", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "2", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "3", nil)
	res, err := dlq.Replay(ctx, keeping{a}, queue, dlq.Filter{}, dlq.ReplayOptions{BatchSize: 2})
	if !errors.Is(err, dlq.ErrNotRemoved) || res.Sent != 2 || res.Removed != 0 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	for _, o := range res.Outcomes[:2] {
		if o.Status != dlq.StatusKept || !strings.Contains(o.Error, "not removed") {
			t.Fatalf("outcome: %+v", o)
		}
	}
	if o := res.Outcomes[2]; o.Status != dlq.StatusPending {
		t.Fatalf("outcome of the next page: %+v", o)
	}
}

// twice is the recording adapter that lists every dead letter twice.
type twice struct{ *recording }

func (t twice) BrowseDeadLetters(ctx context.Context, q string, fn func(*broker.StoredMessage) bool) error {
	return t.Adapter.BrowseDeadLetters(ctx, q, func(m *broker.StoredMessage) bool { return fn(m) && fn(m) })
}

func TestDuplicateIDsSentOnce(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "1", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "2", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "3", nil)
	r := twice{&recording{Adapter: a}}
	res, err := dlq.Replay(ctx, r, queue, dlq.Filter{Limit: 2}, dlq.ReplayOptions{})
	if err != nil || res.Sent != 2 || res.Removed != 2 || len(res.Entries) != 2 || len(r.sent) != 2 {
		t.Fatalf("replay: %+v %v, %d sends", res, err, len(r.sent))
	}
	res, err = dlq.Move(ctx, r, queue, dlq.Filter{}, "ns.PARKED")
	if err != nil || res.Sent != 1 || res.Removed != 1 || len(r.sent) != 3 {
		t.Fatalf("move: %+v %v, %d sends", res, err, len(r.sent))
	}
}

func TestDestinationsChecked(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	forged := func(channel string) {
		t.Helper()
		if err := a.Publish(ctx, queue, &broker.Outgoing{Payload: []byte(channel),
			Headers: map[string]string{broker.HeaderOriginalChannel: channel, broker.HeaderErrorMessage: "e"}}); err != nil {
			t.Fatal(err)
		}
	}
	r := &recording{Adapter: a}
	for _, c := range []struct {
		channel string
		opts    dlq.ReplayOptions
	}{
		{"billing.payments", dlq.ReplayOptions{Namespace: "ns"}},
		{queue, dlq.ReplayOptions{}},
		{"bad channel", dlq.ReplayOptions{}},
		{"ns.orders", dlq.ReplayOptions{To: queue}},
		{"ns.orders", dlq.ReplayOptions{To: "other.orders", Namespace: "ns"}},
	} {
		forged(c.channel)
		for _, move := range []bool{false, true} {
			var res dlq.ReplayResult
			var err error
			if move {
				if c.opts.To == "" {
					continue
				}
				res, err = dlq.MoveWith(ctx, r, queue, dlq.Filter{}, c.opts)
			} else {
				res, err = dlq.Replay(ctx, r, queue, dlq.Filter{}, c.opts)
			}
			if !errors.Is(err, dlq.ErrDestination) || res.Sent != 0 || len(r.sent) != 0 || res.Outcomes[0].Status != dlq.StatusRefused {
				t.Fatalf("%q %+v (move %v): %+v %v", c.channel, c.opts, move, res, err)
			}
		}
		if _, err := dlq.Purge(ctx, a, queue, dlq.Filter{}); err != nil {
			t.Fatal(err)
		}
	}
	got := handled(t, a, "billing.payments")
	forged("billing.payments")
	res, err := dlq.Replay(ctx, r, queue, dlq.Filter{}, dlq.ReplayOptions{Namespace: "ns", AnyNamespace: true})
	if err != nil || res.Sent != 1 {
		t.Fatalf("any namespace: %+v %v", res, err)
	}
	receive(t, got)
}

// counting is the memory adapter that records the IDs of each removal.
type counting struct {
	*memory.Adapter
	removals [][]string
}

func (c *counting) RemoveDeadLetters(ctx context.Context, q string, ids ...string) (int, error) {
	c.removals = append(c.removals, ids)
	return c.Adapter.RemoveDeadLetters(ctx, q, ids...)
}

func TestReplayInPages(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	got := handled(t, a, "ns.orders")
	for i := range 250 {
		deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), fmt.Sprint(i), nil)
	}
	c := &counting{Adapter: a}
	var progress []int
	res, err := dlq.Replay(ctx, c, queue, dlq.Filter{}, dlq.ReplayOptions{Progress: func(done, _ int) { progress = append(progress, done) }})
	if err != nil || res.Sent != 250 || res.Removed != 250 {
		t.Fatalf("replay: %d sent, %d removed, %v", res.Sent, res.Removed, err)
	}
	var sizes []int
	for _, r := range c.removals {
		sizes = append(sizes, len(r))
	}
	if fmt.Sprint(sizes) != "[100 100 50]" {
		t.Fatalf("removals of %v dead letters", sizes)
	}
	if len(progress) != 250 || progress[249] != 250 {
		t.Fatalf("progress %d calls", len(progress))
	}
	for i := range 250 {
		if m := receive(t, got); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
	for _, e := range res.Entries {
		if e.Payload != nil {
			t.Fatal("the result holds payloads")
		}
	}
}

func TestReplayRate(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	for i := range 3 {
		deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), fmt.Sprint(i), nil)
	}
	start := time.Now()
	res, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{Rate: 10})
	if err != nil || res.Sent != 3 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("3 sends at 10/s took %v", d)
	}
}

func TestContinueOnError(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	got := handled(t, a, "ns.orders")
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "1", nil)
	if err := a.Publish(ctx, queue, &broker.Outgoing{Payload: []byte("forged"),
		Headers: map[string]string{broker.HeaderOriginalChannel: "billing.payments"}}); err != nil {
		t.Fatal(err)
	}
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "3", nil)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "4", nil)
	// The third send fails: the first is sent, the forged one refused.
	f := &failing{Adapter: a, publishOK: 1, removeOK: 100}
	res, err := dlq.Replay(ctx, f, queue, dlq.Filter{}, dlq.ReplayOptions{Namespace: "ns", ContinueOnError: true})
	_ = res
	if !errors.Is(err, dlq.ErrDestination) || !errors.Is(err, errDown) {
		t.Fatalf("replay: %v", err)
	}
	want := "[done refused failed failed]"
	var st []dlq.Status
	for _, o := range res.Outcomes {
		st = append(st, o.Status)
	}
	if fmt.Sprint(st) != want || res.Sent != 1 || res.Removed != 1 {
		t.Fatalf("outcomes %v, want %s; %d sent, %d removed", st, want, res.Sent, res.Removed)
	}
	receive(t, got)
	// Once the broker is back, the rest goes; the forged one stays.
	f.publishOK = 100
	res, err = dlq.Replay(ctx, f, queue, dlq.Filter{}, dlq.ReplayOptions{Namespace: "ns", ContinueOnError: true})
	if !errors.Is(err, dlq.ErrDestination) || res.Sent != 2 || res.Removed != 2 {
		t.Fatalf("second replay: %+v %v", res, err)
	}
	if left, _ := dlq.List(ctx, a, queue, dlq.Filter{}); len(left) != 1 || string(left[0].Payload) != "forged" {
		t.Fatalf("left %v", payloads(left))
	}
	// Without it, the forged one stops the replay before anything is sent.
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "5", nil)
	res, err = dlq.Replay(ctx, f, queue, dlq.Filter{}, dlq.ReplayOptions{Namespace: "ns"})
	if !errors.Is(err, dlq.ErrDestination) || res.Sent != 0 {
		t.Fatalf("third replay: %+v %v", res, err)
	}
}

// kafkaLike is the memory adapter under the name of an adapter that
// targets one group with broker.HeaderGroup, recording the sends.
type kafkaLike struct {
	*memory.Adapter
	mu   sync.Mutex
	sent []map[string]string
}

func (k *kafkaLike) Name() string { return "Kafka" }

func (k *kafkaLike) Publish(ctx context.Context, ch string, m *broker.Outgoing) error {
	k.mu.Lock()
	k.sent = append(k.sent, m.Headers)
	k.mu.Unlock()
	return k.Adapter.Publish(ctx, ch, m)
}

func TestReplayToOneGroup(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	deadLetter(t, a, "ns.orders", "billing", 1, errors.New("e"), "1", nil)
	if _, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{Group: "billing"}); !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("group on memory: %v", err)
	}
	if _, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	k := &kafkaLike{Adapter: a}
	res, err := dlq.Replay(ctx, k, queue, dlq.Filter{}, dlq.ReplayOptions{OriginalGroup: true})
	if err != nil || res.Sent != 1 || res.Outcomes[0].Group != "billing" || k.sent[0][broker.HeaderGroup] != "billing" {
		t.Fatalf("original group: %+v %v %v", res, err, k.sent)
	}
	deadLetter(t, a, "ns.orders", "billing", 1, errors.New("e"), "2", nil)
	if _, err := dlq.Replay(ctx, k, queue, dlq.Filter{}, dlq.ReplayOptions{Group: "audit"}); err != nil || k.sent[1][broker.HeaderGroup] != "audit" {
		t.Fatalf("group: %v %v", err, k.sent)
	}
	deadLetter(t, a, "ns.orders", "billing", 1, errors.New("e"), "3", nil)
	if _, err := dlq.Replay(ctx, k, queue, dlq.Filter{}, dlq.ReplayOptions{}); err != nil || k.sent[2][broker.HeaderGroup] != "" {
		t.Fatalf("every group: %v %v", err, k.sent)
	}
}

func TestReplayHeadersOfBrokersAndUndecodable(t *testing.T) {
	e := dlq.Entry{ID: "1", Headers: map[string]string{
		"x-death": "[...]", "x-first-death-queue": "q", "x-last-death-reason": "rejected", "x-retry-not-before": "1712345678901",
		"x-original-$meta": "not json", "x-original-channel": "ns.orders", "x-original-group": "g", "x-original-id": "7",
		"x-original-x-error-name": "forged", "trace": "t1",
	}}
	h := dlq.ReplayHeaders(queue, e, time.Now(), broker.Limits{})
	delete(h, dlq.HeaderReplayedFrom)
	want := map[string]string{"$meta": "not json", "trace": "t1"}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Fatalf("headers %v, want %v", h, want)
	}
}

func TestEntryJSON(t *testing.T) {
	for payload, want := range map[string]string{
		`{"id":7}`:   `"payload":{"id":7}`,
		"\xff\x00":   `"raw":"/wA="`,
		"plain text": `"raw":"cGxhaW4gdGV4dA=="`,
		`{"id": 7}`:  `"raw":"eyJpZCI6IDd9"`, // not compact: kept exact
	} {
		b, err := json.Marshal(dlq.Entry{ID: "1", Payload: []byte(payload)})
		if err != nil || !strings.Contains(string(b), want) {
			t.Fatalf("%q: %s %v, want %s", payload, b, err, want)
		}
		var back dlq.Entry
		if err := json.Unmarshal(b, &back); err != nil || string(back.Payload) != payload || back.ID != "1" {
			t.Fatalf("%q: back %+v %v", payload, back, err)
		}
		// Indented, as the command prints it.
		b, _ = json.MarshalIndent(dlq.Entry{ID: "1", Payload: []byte(payload)}, "", "  ")
		back = dlq.Entry{}
		if err := json.Unmarshal(b, &back); err != nil || string(back.Payload) != payload {
			t.Fatalf("%q: back from indented %q %v", payload, back.Payload, err)
		}
	}
}

func TestCopiesKeepTheKey(t *testing.T) {
	ctx := context.Background()
	a := connected(t)
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "1", map[string]string{broker.HeaderKey: "order-7"})
	deadLetter(t, a, "ns.orders", "g", 1, errors.New("e"), "2", nil)
	r := &recording{Adapter: a}
	if _, err := dlq.Replay(ctx, r, queue, dlq.Filter{Limit: 1}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.Move(ctx, r, queue, dlq.Filter{}, "ns.PARKED"); err != nil {
		t.Fatal(err)
	}
	if r.sent[0].Key != "order-7" || r.sent[1].Key != "" {
		t.Fatalf("keys %q %q", r.sent[0].Key, r.sent[1].Key)
	}
	h := dlq.ReplayHeaders(queue, dlq.Entry{Headers: map[string]string{broker.HeaderKey: "k", "x-channels-unfinished": "1"}}, time.Now(), broker.Limits{})
	if h[broker.HeaderKey] != "k" || h["x-channels-unfinished"] != "" {
		t.Fatalf("headers %v", h)
	}
}
