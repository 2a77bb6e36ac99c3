package nats

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream"
)

// toolAdapter is a connected adapter used the way the tooling uses it (no
// plugin), closed at the end of the test.
func toolAdapter(t *testing.T) *jetstream.Adapter {
	t.Helper()
	needNATS(t)
	a, err := jetstream.New(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

func browseAll(t *testing.T, a broker.DeadLetterStore, queue string) []*broker.StoredMessage {
	t.Helper()
	var out []*broker.StoredMessage
	if err := a.BrowseDeadLetters(context.Background(), queue, func(m *broker.StoredMessage) bool {
		out = append(out, m)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// streamMsgs is the number of messages stored on subject.
func streamMsgs(t *testing.T, a *jetstream.Adapter, subject string) uint64 {
	t.Helper()
	ctx := context.Background()
	name, err := a.JetStream().StreamNameBySubject(ctx, subject)
	if errors.Is(err, js.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, js.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func seqOf(t *testing.T, id string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		t.Fatalf("ID %q is not a sequence", id)
	}
	return n
}

// TestToolingDeadLetters: the dead letters the plugin wrote are browsed
// with their headers, without consuming them; removal deletes exactly the
// IDs given.
func TestToolingDeadLetters(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	ch, group, dlq := unique("tool.dl.topic"), unique("tool-dl-group"), unique("tool.dl.DLQ")
	t.Cleanup(func() {
		_ = tool.RemoveChannel(context.Background(), ch)
		_ = tool.RemoveChannel(context.Background(), dlq)
	})
	startPlugin(t, timings, &service{Name: "tooldl", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler:       func(context.Context, *channels.Message) error { return errors.New("boom") }}}})
	snd := startPlugin(t, timings, nil)
	for i := range 3 {
		if err := snd.SendToChannel(ctx, ch, map[string]int{"n": i}, broker.WithHeader("user-header", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, "3 dead letters", func() bool { return streamMsgs(t, tool, dlq) == 3 })

	got := browseAll(t, tool, dlq)
	if len(got) != 3 {
		t.Fatalf("browsed %d dead letters, want 3", len(got))
	}
	seen := map[string]bool{}
	for i, m := range got {
		if m.Channel != dlq || time.Since(m.Time) > time.Minute || m.Time.After(time.Now().Add(time.Second)) {
			t.Fatalf("dead letter %d: id %q channel %q time %v", i, m.ID, m.Channel, m.Time)
		}
		if i > 0 && seqOf(t, got[i-1].ID) >= seqOf(t, m.ID) {
			t.Fatalf("not oldest first: %s then %s", got[i-1].ID, m.ID)
		}
		if m.Headers[broker.HeaderErrorMessage] != "boom" || m.Headers[broker.HeaderOriginalChannel] != ch ||
			m.Headers[broker.HeaderOriginalGroup] != group || m.Headers[broker.HeaderOriginalID] == "" {
			t.Fatalf("dead letter %d headers %v", i, m.Headers)
		}
		for k := range m.Headers {
			if strings.HasPrefix(k, "Nats-") {
				t.Fatalf("dead letter %d has the transport header %s", i, k)
			}
		}
		seen[string(m.Payload)+"|"+m.Headers["user-header"]] = true
	}
	for i := range 3 {
		if !seen[fmt.Sprintf(`{"n":%d}|%d`, i, i)] {
			t.Fatalf("dead letter %d missing from %v", i, seen)
		}
	}
	n := 0
	if err := tool.BrowseDeadLetters(ctx, dlq, func(*broker.StoredMessage) bool { n++; return false }); err != nil || n != 1 {
		t.Fatalf("browse stopped after %d calls: %v", n, err)
	}
	if l := streamMsgs(t, tool, dlq); l != 3 {
		t.Fatalf("%d dead letters after browsing, want 3", l)
	}
	if none := browseAll(t, tool, unique("tool.dl.none")); len(none) != 0 {
		t.Fatalf("browse of a missing queue: %d", len(none))
	}

	// A group reading the dead-letter queue from its start gets them all.
	dead := &channelstest.Recorder{}
	startPlugin(t, timings, &service{Name: "tooldlread", Channels: channels.Channels{dlq: {Group: unique("tool-dl-reader"),
		AdapterOptions: []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverAll}}, Handler: dead.Handle}}})
	eventually(t, 15*time.Second, "the reading group gets the 3 dead letters", func() bool { return dead.Count() == 3 })

	removed, err := tool.RemoveDeadLetters(ctx, dlq, got[0].ID, got[2].ID, "999999999", "not-an-id", "0")
	if err != nil || removed != 2 {
		t.Fatalf("removed %d: %v", removed, err)
	}
	left := browseAll(t, tool, dlq)
	if len(left) != 1 || left[0].ID != got[1].ID {
		t.Fatalf("left after removal: %v", left)
	}
	if removed, err := tool.RemoveDeadLetters(ctx, dlq, got[0].ID); err != nil || removed != 0 {
		t.Fatalf("removing again: %d, %v", removed, err)
	}
}

// TestToolingSharedStream: on a stream that holds several subjects, browse
// lists only the queue's messages and removal refuses a sequence of
// another subject.
func TestToolingSharedStream(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	base := unique("tool.shared")
	q, other := base+".q", base+".other"
	stream := jetstream.StreamName(base)
	if _, err := tool.JetStream().CreateStream(ctx, js.StreamConfig{Name: stream, Subjects: []string{q, other}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tool.JetStream().DeleteStream(context.Background(), stream) })
	for i := range 6 {
		subj := q
		if i%2 == 1 {
			subj = other
		}
		if _, err := tool.JetStream().Publish(ctx, subj, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := browseAll(t, tool, q)
	var payloads []string
	for _, m := range got {
		payloads = append(payloads, string(m.Payload))
	}
	if !slices.Equal(payloads, []string{"0", "2", "4"}) {
		t.Fatalf("browsed %v", payloads)
	}
	// Sequence 2 is a message of the other subject.
	if err := tool.RemoveMessage(ctx, q, "2"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("removing another subject's message: %v", err)
	}
	if n, err := tool.RemoveDeadLetters(ctx, q, "2", got[0].ID); err != nil || n != 1 {
		t.Fatalf("removed %d: %v", n, err)
	}
	if streamMsgs(t, tool, other) != 3 || streamMsgs(t, tool, q) != 2 {
		t.Fatal("removal touched the wrong subject")
	}
	list, err := tool.Channels(ctx, base+".")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != other || list[0].Messages != 3 || list[1].Name != q || list[1].Messages != 2 {
		t.Fatalf("channels %+v", list)
	}
}

// TestToolingHostileDeadLetters: a message whose header block does not
// decode is listed with its payload, and the browse goes on past it.
func TestToolingHostileDeadLetters(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	dlq := unique("tool.hostile.DLQ")
	stream := jetstream.StreamName(dlq)
	if _, err := tool.JetStream().CreateStream(ctx, js.StreamConfig{Name: stream, Subjects: []string{dlq}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tool.JetStream().DeleteStream(context.Background(), stream) })
	// A header block nats.go cannot decode, published as raw protocol
	// (nats.go would write a valid one).
	rawHPUB(t, dlq, "NATS/1.0\r\nnot a header line\r\n\r\n", "p1")
	eventually(t, 10*time.Second, "the raw message is stored", func() bool { return streamMsgs(t, tool, dlq) == 1 })
	many := nats.Header{}
	for i := range 2000 {
		many.Set(fmt.Sprint("h", i), "v")
	}
	for _, m := range []*nats.Msg{
		{Subject: dlq, Data: []byte("p2"), Header: many},
		{Subject: dlq, Data: []byte("p3"), Header: nats.Header{"k": {"v", "second"}}},
	} {
		if _, err := tool.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	got := browseAll(t, tool, dlq)
	if len(got) != 3 {
		t.Fatalf("listed %d messages, want 3", len(got))
	}
	for i, want := range []string{"p1", "p2", "p3"} {
		if string(got[i].Payload) != want {
			t.Fatalf("message %d payload %q", i, got[i].Payload)
		}
	}
	if got[0].Headers != nil {
		t.Fatalf("malformed header block gave %v", got[0].Headers)
	}
	if len(got[1].Headers) != 2000 || got[2].Headers["k"] != "v" {
		t.Fatalf("headers: %d, %v", len(got[1].Headers), got[2].Headers)
	}
}

// rawHPUB publishes a message with the header block hdr as it is, on a
// connection of its own.
func rawHPUB(t *testing.T, subject, hdr, payload string) {
	t.Helper()
	u, err := url.Parse(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB %s %d %d\r\n%s%s\r\nPING\r\n",
		subject, len(hdr), len(hdr)+len(payload), hdr, payload); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("raw publish: %s", line)
		}
		if strings.HasPrefix(line, "PONG") {
			return
		}
	}
}

// TestToolingRemoveMessage: RemoveMessage deletes one message of a
// channel, and a missing one is ErrNotFound.
func TestToolingRemoveMessage(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	ch := unique("tool.rm.topic")
	t.Cleanup(func() { _ = tool.RemoveChannel(context.Background(), ch) })
	snd := startPlugin(t, timings, nil)
	for i := range 2 {
		if err := snd.SendToChannel(ctx, ch, i); err != nil {
			t.Fatal(err)
		}
	}
	st, err := tool.JetStream().Stream(ctx, jetstream.StreamName(ch))
	if err != nil {
		t.Fatal(err)
	}
	first := st.CachedInfo().State.FirstSeq
	id := strconv.FormatUint(first, 10)
	if err := tool.RemoveMessage(ctx, ch, id); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, tool, ch); n != 1 {
		t.Fatalf("%d messages left", n)
	}
	if _, err := st.GetMsg(ctx, first+1); err != nil {
		t.Fatalf("the other message: %v", err)
	}
	for _, c := range []struct{ ch, id string }{{ch, id}, {ch, "999999999"}, {ch, "garbage"}, {ch, "0"}, {unique("tool.rm.none"), "1"}} {
		if err := tool.RemoveMessage(ctx, c.ch, c.id); !errors.Is(err, broker.ErrNotFound) {
			t.Fatalf("RemoveMessage(%s, %s) = %v, want ErrNotFound", c.ch, c.id, err)
		}
	}
}

// TestToolingTail: Tail sees what is sent after it started, not before,
// and the group still gets everything; a Tail started before the channel
// has a stream sees its first message.
func TestToolingTail(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	ch, group := unique("tool.tail.topic"), unique("tool-tail-group")
	t.Cleanup(func() { _ = tool.RemoveChannel(context.Background(), ch) })
	rec := &channelstest.Recorder{}
	startPlugin(t, timings, &service{Name: "tooltail", Channels: channels.Channels{ch: {Group: group, Handler: rec.Handle}}})
	snd := startPlugin(t, timings, nil)
	if err := snd.SendToChannel(ctx, ch, "before"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "group got the first message", func() bool { return rec.Count() == 1 })

	var (
		mu     sync.Mutex
		tailed []string
	)
	tailCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- tool.Tail(tailCtx, ch, func(m *broker.StoredMessage) bool {
			if m.Channel != ch || m.ID == "" || m.Time.IsZero() {
				t.Errorf("tailed message %+v", m)
			}
			mu.Lock()
			tailed = append(tailed, string(m.Payload))
			mu.Unlock()
			return true
		})
	}()
	tailedCopy := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tailed)
	}
	sent := 0
	eventually(t, 15*time.Second, "tail sees a message", func() bool {
		if err := snd.SendToChannel(ctx, ch, fmt.Sprint("m", sent)); err != nil {
			t.Fatal(err)
		}
		sent++
		return len(tailedCopy()) > 0
	})
	if err := snd.SendToChannel(ctx, ch, "final"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "tail sees the last message", func() bool {
		got := tailedCopy()
		return len(got) > 0 && got[len(got)-1] == `"final"`
	})
	got := tailedCopy()
	var first int
	if _, err := fmt.Sscanf(got[0], `"m%d"`, &first); err != nil {
		t.Fatalf("first tailed %q", got[0])
	}
	var want []string
	for i := first; i < sent; i++ {
		want = append(want, fmt.Sprintf(`"m%d"`, i))
	}
	want = append(want, `"final"`)
	if !slices.Equal(got, want) {
		t.Fatalf("tailed %v, want %v", got, want)
	}
	eventually(t, 15*time.Second, "the group gets every message", func() bool { return rec.Count() == 1+sent+1 })
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Tail returned %v after its context ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Tail did not return after its context ended")
	}

	// A channel without a stream yet: its first message is seen.
	later := unique("tool.tail.later")
	t.Cleanup(func() { _ = tool.RemoveChannel(context.Background(), later) })
	done2 := make(chan string, 1)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		_ = tool.Tail(tctx, later, func(m *broker.StoredMessage) bool { done2 <- string(m.Payload); return false })
	}()
	// Tail is waiting for the stream: give it time to look once.
	consistently(t, 2*jetstream.TailPoll, "no message before the first send", func() bool { return len(done2) == 0 })
	if err := snd.SendToChannel(ctx, later, "first"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-done2:
		if p != `"first"` {
			t.Fatalf("tailed %s", p)
		}
	case <-tctx.Done():
		t.Fatal("the first message of a new stream was not tailed")
	}
}

// TestToolingChannels: Channels lists the channels under a prefix, sorted,
// with their groups' pending counts.
func TestToolingChannels(t *testing.T) {
	ctx := context.Background()
	tool := toolAdapter(t)
	base := unique("tool.ls")
	chA, chB, group := base+".a", base+".b", unique("tool-ls-group")
	t.Cleanup(func() {
		_ = tool.RemoveChannel(context.Background(), chA)
		_ = tool.RemoveChannel(context.Background(), chB)
	})
	release := make(chan struct{})
	startPlugin(t, timings, &service{Name: "toolls", Channels: channels.Channels{chA: {Group: group, MaxInFlight: 1,
		Handler: func(ctx context.Context, _ *channels.Message) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}})
	t.Cleanup(func() { close(release) }) // before the plugin stops
	snd := startPlugin(t, timings, nil)
	if err := snd.SendToChannel(ctx, chA, 1); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := snd.SendToChannel(ctx, chB, 1); err != nil {
			t.Fatal(err)
		}
	}
	var list []broker.ChannelInfo
	eventually(t, 10*time.Second, "the group holds its message", func() bool {
		var err error
		list, err = tool.Channels(ctx, base+".")
		if err != nil {
			t.Fatal(err)
		}
		return len(list) == 2 && len(list[0].Groups) == 1 && list[0].Groups[0].Pending == 1
	})
	a, b := list[0], list[1]
	if a.Name != chA || a.Messages != 1 || a.Groups[0].Name != group || a.Groups[0].Lag != 0 {
		t.Fatalf("channel a: %+v", a)
	}
	if b.Name != chB || b.Messages != 2 || len(b.Groups) != 0 {
		t.Fatalf("channel b: %+v", b)
	}
	// A tail's consumer is no group.
	tctx, cancel := context.WithCancel(ctx)
	tailing := make(chan error, 1)
	go func() { tailing <- tool.Tail(tctx, chB, func(*broker.StoredMessage) bool { return true }) }()
	eventually(t, 10*time.Second, "the tail's consumer exists", func() bool {
		st, err := tool.JetStream().Stream(ctx, jetstream.StreamName(chB))
		return err == nil && st.CachedInfo().State.Consumers == 1
	})
	list, err := tool.Channels(ctx, base+".")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || len(list[1].Groups) != 0 {
		t.Fatalf("channels while tailing: %+v", list)
	}
	cancel()
	if err := <-tailing; err != nil {
		t.Fatal(err)
	}
	all, err := tool.Channels(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(all, func(x, y broker.ChannelInfo) int { return strings.Compare(x.Name, y.Name) }) {
		t.Fatal("Channels is not sorted")
	}
	for _, c := range all {
		if strings.HasPrefix(c.Name, "$") {
			t.Fatalf("Channels lists %s", c.Name)
		}
	}
}
