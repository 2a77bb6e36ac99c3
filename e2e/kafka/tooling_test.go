package kafka

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// toolAdapter is a connected adapter that subscribes nothing, as the
// operations tooling uses one.
func toolAdapter(t *testing.T) *kafka.Adapter {
	t.Helper()
	a, err := kafka.New(kafkaURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a
}

// deleteTopics deletes topics at the end of the test.
func deleteTopics(t *testing.T, topics ...string) {
	t.Cleanup(func() {
		client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics})
	})
}

func browse(t *testing.T, a broker.DeadLetterStore, queue string) []*broker.StoredMessage {
	t.Helper()
	var out []*broker.StoredMessage
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool { out = append(out, m); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(ms []*broker.StoredMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func sortedPayloads(ms []*broker.StoredMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	sort.Strings(out)
	return out
}

// deadLettered starts a service whose channel fails every message for
// good (retries off, dead-lettering on) and a service reading the
// dead-letter topic as a channel, sends n messages and waits for their
// dead letters at the reader.
func deadLettered(t *testing.T, n int) (ch, dlq string, reader *channelstest.Recorder) {
	t.Helper()
	base := unique("tool")
	ch, dlq = base+".ch", base+".DLQ"
	deleteTopics(t, ch, dlq, kafka.RemovedTopic(dlq))
	reader = &channelstest.Recorder{}
	startPlugin(t, &service{Name: "reader", Channels: channels.Channels{dlq: {Group: "reader", Handler: reader.Handle,
		AdapterOptions: []any{timings}}}})
	fails := func(context.Context, *channels.Message) error { return errors.New("fails for good") }
	p := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxRetries: channels.NoRetries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: fails, AdapterOptions: []any{timings}}}})
	for i := range n {
		if err := p.SendToChannel(context.Background(), ch, i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "the dead letters at the reader", func() bool { return reader.Count() == n })
	return ch, dlq, reader
}

// TestToolingBrowseAndRemoveDeadLetters: dead letters written by the
// plugin (before the browse started) are browsed with their headers,
// the same each time; removal hides exactly the given IDs from later
// browses, while a group reading the dead-letter topic as a channel
// (one that starts from the beginning after the removal included) still
// receives every record.
func TestToolingBrowseAndRemoveDeadLetters(t *testing.T) {
	needKafka(t)
	const n = 5
	ch, dlq, reader := deadLettered(t, n)
	tool := toolAdapter(t)
	first := browse(t, tool, dlq)
	if got := sortedPayloads(first); !slices.Equal(got, []string{"0", "1", "2", "3", "4"}) {
		t.Fatalf("browsed %v", got)
	}
	seen := map[string]bool{}
	for i, m := range first {
		if seen[m.ID] || m.Channel != dlq || m.Time.IsZero() || m.Headers[broker.HeaderErrorMessage] != "fails for good" ||
			m.Headers[broker.HeaderOriginalChannel] != ch || m.Headers[broker.HeaderOriginalGroup] != "g" {
			t.Errorf("dead letter %+v", m)
		}
		if i > 0 && m.Time.Before(first[i-1].Time) {
			t.Errorf("not oldest first: %v after %v", m.Time, first[i-1].Time)
		}
		seen[m.ID] = true
	}
	for i := range 5 {
		if again := browse(t, tool, dlq); !slices.Equal(ids(again), ids(first)) {
			t.Fatalf("browse %d: %v, first %v", i, ids(again), ids(first))
		}
	}
	var one int
	if err := tool.BrowseDeadLetters(context.Background(), dlq, func(*broker.StoredMessage) bool { one++; return false }); err != nil || one != 1 {
		t.Fatalf("stopped browse: %d, %v", one, err)
	}

	gone := []string{first[1].ID, first[3].ID}
	removed, err := tool.RemoveDeadLetters(context.Background(), dlq, gone[0], gone[1], gone[0], "x", "99/0", "0/999999")
	if err != nil || removed != 2 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	after := browse(t, tool, dlq)
	want := slices.DeleteFunc(ids(first), func(id string) bool { return slices.Contains(gone, id) })
	if !slices.Equal(ids(after), want) {
		t.Fatalf("after removal %v, want %v", ids(after), want)
	}
	// Another adapter sees the removal too, and removing again removes nothing.
	if again := browse(t, toolAdapter(t), dlq); !slices.Equal(ids(again), want) {
		t.Fatalf("another adapter browses %v", ids(again))
	}
	if removed, err := tool.RemoveDeadLetters(context.Background(), dlq, gone...); err != nil || removed != 0 {
		t.Fatalf("removed again %d, %v", removed, err)
	}
	consistently(t, 300*time.Millisecond, "the reader got each dead letter once", func() bool { return reader.Count() == n })
	late := &channelstest.Recorder{}
	opts := timings
	opts.FromBeginning = true
	startPlugin(t, &service{Name: "late", Channels: channels.Channels{dlq: {Group: "late", Handler: late.Handle,
		AdapterOptions: []any{opts}}}})
	eventually(t, 60*time.Second, "a new group reads every record", func() bool { return late.Count() == n })

	// A topic that does not exist holds nothing.
	if got := browse(t, tool, unique("tool.none")); len(got) != 0 {
		t.Fatalf("missing topic: %d records", len(got))
	}
}

// TestToolingHostileDeadLetter: a record with more headers than the
// consumers take is listed with the headers that fit and the mark.
func TestToolingHostileDeadLetter(t *testing.T) {
	needKafka(t)
	_, dlq, _ := deadLettered(t, 1)
	hs := make([]kafkago.Header, 3000)
	for i := range hs {
		hs[i] = kafkago.Header{Key: "k" + strconv.Itoa(i), Value: []byte(strings.Repeat("v", 100))}
	}
	foreignWrite(t, dlq, []kafkago.Message{{Value: []byte("hostile"), Headers: hs}})
	got := browse(t, toolAdapter(t), dlq)
	if len(got) != 2 {
		t.Fatalf("browsed %d", len(got))
	}
	var h *broker.StoredMessage
	for _, m := range got {
		if string(m.Payload) == "hostile" {
			h = m
		}
	}
	if h == nil || len(h.Headers) > broker.MaxHeaders || broker.HeaderBytes(h.Headers) > broker.MaxHeadersSize+broker.MaxHeaders*broker.HeaderEntryOverhead ||
		h.Headers[kafka.HeaderHeadersCut] == "" {
		t.Fatalf("hostile record listed with %d headers", len(h.Headers))
	}
	t.Logf("hostile record: %s", h.Headers[kafka.HeaderHeadersCut])
}

// TestToolingTail: a tail sees the records written after it started and
// joins no group (the group still gets every message).
func TestToolingTail(t *testing.T) {
	needKafka(t)
	ch := unique("tool.tail")
	deleteTopics(t, ch)
	got := &channelstest.Recorder{}
	p := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", Handler: got.Handle,
		AdapterOptions: []any{timings}}}})
	tool := toolAdapter(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var tailed []*broker.StoredMessage
	done := make(chan error, 1)
	go func() {
		done <- tool.Tail(ctx, ch, func(m *broker.StoredMessage) bool {
			mu.Lock()
			tailed = append(tailed, m)
			mu.Unlock()
			return true
		})
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(tailed) }
	// real are the messages tailed that are not probes.
	real := func() []*broker.StoredMessage {
		mu.Lock()
		defer mu.Unlock()
		var out []*broker.StoredMessage
		for _, m := range tailed {
			if string(m.Payload) != `"probe"` {
				out = append(out, m)
			}
		}
		return out
	}
	probes := 0
	eventually(t, 20*time.Second, "the tail started", func() bool {
		if count() > 0 {
			return true
		}
		probes++
		if err := p.SendToChannel(context.Background(), ch, "probe"); err != nil {
			t.Fatal(err)
		}
		return false
	})
	for i := range 5 {
		if err := p.SendToChannel(context.Background(), ch, i, broker.WithHeader("k", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the tail saw the 5 messages", func() bool { return len(real()) == 5 })
	var payloads []string
	for _, m := range real() {
		payloads = append(payloads, string(m.Payload))
		if m.Headers["k"] != string(m.Payload) || m.Channel != ch || m.Time.IsZero() {
			t.Errorf("tailed %+v", m)
		}
	}
	sort.Strings(payloads)
	if !slices.Equal(payloads, []string{"0", "1", "2", "3", "4"}) {
		t.Fatalf("tailed %v", payloads)
	}
	eventually(t, 60*time.Second, "the group got every message", func() bool { return got.Count() == probes+5 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tail did not return after its context ended")
	}
}

// TestToolingTailStops: a tail whose callback says stop returns at once,
// its context still open (its partition readers end with it).
func TestToolingTailStops(t *testing.T) {
	needKafka(t)
	ch := unique("tool.tailstop")
	deleteTopics(t, ch)
	p := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g",
		Handler: func(context.Context, *channels.Message) error { return nil }, AdapterOptions: []any{timings}}}})
	tool := toolAdapter(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan *broker.StoredMessage, 1)
	done := make(chan error, 1)
	go func() {
		done <- tool.Tail(ctx, ch, func(m *broker.StoredMessage) bool {
			seen <- m
			return false
		})
	}()
	var got *broker.StoredMessage
	eventually(t, 20*time.Second, "the tail saw a message", func() bool {
		if err := p.SendToChannel(context.Background(), ch, "probe"); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-seen:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	if got.Channel != ch || string(got.Payload) != `"probe"` {
		t.Errorf("tailed %+v", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tail did not return after its callback said stop")
	}
}

// TestToolingChannels: topics are listed by prefix with the records they
// hold and their groups' lag; the removal markers are not channels.
func TestToolingChannels(t *testing.T) {
	needKafka(t)
	const n = 3
	ch, dlq, _ := deadLettered(t, n)
	tool := toolAdapter(t)
	first := browse(t, tool, dlq)
	if removed, err := tool.RemoveDeadLetters(context.Background(), dlq, first[0].ID); err != nil || removed != 1 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	prefix := strings.TrimSuffix(ch, "ch")
	var list []broker.ChannelInfo
	eventually(t, 30*time.Second, "the channel and its group with no lag", func() bool {
		var err error
		if list, err = tool.Channels(context.Background(), prefix); err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.Name == ch {
				return c.Messages == n && len(c.Groups) == 1 && c.Groups[0].Name == "g" && c.Groups[0].Lag == 0
			}
		}
		return false
	})
	names := make([]string, len(list))
	for i, c := range list {
		names[i] = c.Name
		if c.Name == dlq && (c.Messages != n || len(c.Groups) != 1 || c.Groups[0].Name != "reader") {
			t.Errorf("dead-letter topic %+v", c)
		}
		if !strings.HasPrefix(c.Name, prefix) || c.Name == kafka.RemovedTopic(dlq) {
			t.Errorf("listed %q", c.Name)
		}
	}
	if !slices.IsSorted(names) || !slices.Contains(names, ch) || !slices.Contains(names, dlq) {
		t.Fatalf("listed %v", names)
	}
}

// TestToolingRemovalMarkersOfAnOldTopic: the removal markers of a
// dead-letter topic that was deleted and created again hide none of the
// new topic's records.
func TestToolingRemovalMarkersOfAnOldTopic(t *testing.T) {
	needKafka(t)
	dlq := unique("tool.recreated.DLQ")
	deleteTopics(t, dlq, kafka.RemovedTopic(dlq))
	tool := toolAdapter(t)
	send := func(payload string) {
		t.Helper()
		// Partition 0: the new records take the positions of the old ones.
		zero := 0
		if err := tool.Publish(context.Background(), dlq, &broker.Outgoing{Payload: []byte(payload),
			Options: broker.PublishOptions{AdapterOptions: []any{kafka.SendOptions{Partition: &zero}}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		send("old" + strconv.Itoa(i))
	}
	old := browse(t, tool, dlq)
	if removed, err := tool.RemoveDeadLetters(context.Background(), dlq, ids(old)...); err != nil || removed != 3 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	if left := browse(t, tool, dlq); len(left) != 0 {
		t.Fatalf("left %v", ids(left))
	}
	if err := tool.RemoveChannel(context.Background(), dlq); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		send("new" + strconv.Itoa(i))
	}
	if got := sortedPayloads(browse(t, tool, dlq)); !slices.Equal(got, []string{"new0", "new1", "new2"}) {
		t.Fatalf("browsed %v", got)
	}
}
