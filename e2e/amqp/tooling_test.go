package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// toolAdapter is a connected adapter that subscribes nothing, as the
// operations tooling uses one.
func toolAdapter(t *testing.T, opts ...chamqp.Option) *chamqp.Adapter {
	t.Helper()
	opts = append([]chamqp.Option{chamqp.WithManagementURL(brokerenv.AMQPManagementURL())}, opts...)
	a, err := chamqp.New(brokerenv.AMQPURL(), opts...)
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

// browse lists the dead letters of queue.
func browse(t *testing.T, a broker.DeadLetterStore, queue string) []*broker.StoredMessage {
	t.Helper()
	var out []*broker.StoredMessage
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
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

func payloads(ms []*broker.StoredMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	return out
}

// queueLen is the number of messages ready in queue.
func queueLen(t *testing.T, queue string) int {
	t.Helper()
	q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// deadLettered starts a service whose channel fails every message for
// good (retries off, dead-lettering on) and a service reading the
// dead-letter queue as a channel, sends n messages and waits for their
// dead letters in the queue and at the reader.
func deadLettered(t *testing.T, n int, aopts ...chamqp.Option) (ch, dlq string, reader *channelstest.Recorder, a *chamqp.Adapter) {
	t.Helper()
	ch, dlq = unique("tool.ch"), unique("tool.DLQ")
	cleanup(t, []string{"g." + ch, dlq, "reader." + dlq}, []string{ch, dlq})
	fails := func(context.Context, *channels.Message) error { return errors.New("fails for good") }
	reader = &channelstest.Recorder{}
	startPlugin(t, &service{Name: "reader", Channels: channels.Channels{dlq: {Group: "reader", Handler: reader.Handle}}}, nil)
	p, a := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxRetries: channels.NoRetries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: fails}}}, aopts)
	for i := range n {
		if err := p.SendToChannel(context.Background(), ch, i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the dead letters in the queue", func() bool { return queueLen(t, dlq) == n })
	eventually(t, 20*time.Second, "the dead letters at the reader", func() bool { return reader.Count() == n })
	return ch, dlq, reader, a
}

// TestToolingBrowseAndRemoveDeadLetters: dead letters written by the
// plugin are browsed with their headers, in order, as often as one likes
// (30 browses leave the queue's count and order as they were); removal
// deletes exactly the given IDs; the group reading the dead-letter queue
// as a channel got every dead letter and nothing more.
func TestToolingBrowseAndRemoveDeadLetters(t *testing.T) {
	needAMQP(t)
	const n = 5
	ch, dlq, reader, _ := deadLettered(t, n)
	tool := toolAdapter(t)
	first := browse(t, tool, dlq)
	if got, want := payloads(first), []string{"0", "1", "2", "3", "4"}; !slices.Equal(got, want) {
		t.Fatalf("browsed %v, want %v", got, want)
	}
	seen := map[string]bool{}
	for _, m := range first {
		if m.ID == "" || seen[m.ID] {
			t.Errorf("ID %q empty or repeated", m.ID)
		}
		seen[m.ID] = true
		if m.Channel != dlq || m.Headers[broker.HeaderErrorMessage] != "fails for good" ||
			m.Headers[broker.HeaderOriginalChannel] != ch || m.Headers[broker.HeaderOriginalGroup] != "g" ||
			m.Headers[broker.HeaderErrorTimestamp] == "" {
			t.Errorf("dead letter %+v", m)
		}
	}
	for i := range 30 {
		again := browse(t, tool, dlq)
		if !slices.Equal(ids(again), ids(first)) {
			t.Fatalf("browse %d: %v, first %v", i, ids(again), ids(first))
		}
	}
	if got := queueLen(t, dlq); got != n {
		t.Fatalf("%d messages in the dead-letter queue after the browses, want %d", got, n)
	}
	// A browse stopped by fn gives back what it took.
	var one []*broker.StoredMessage
	if err := tool.BrowseDeadLetters(context.Background(), dlq, func(m *broker.StoredMessage) bool {
		one = append(one, m)
		return false
	}); err != nil || len(one) != 1 {
		t.Fatalf("stopped browse: %d messages, %v", len(one), err)
	}

	removed, err := tool.RemoveDeadLetters(context.Background(), dlq, first[1].ID, first[3].ID, "no-such-id")
	if err != nil || removed != 2 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	after := browse(t, tool, dlq)
	if got, want := payloads(after), []string{"0", "2", "4"}; !slices.Equal(got, want) {
		t.Fatalf("after removal %v, want %v", got, want)
	}
	if got := queueLen(t, dlq); got != 3 {
		t.Fatalf("%d messages in the dead-letter queue after removal, want 3", got)
	}
	if removed, err := tool.RemoveDeadLetters(context.Background(), dlq, first[1].ID); err != nil || removed != 0 {
		t.Fatalf("removed again %d, %v", removed, err)
	}
	consistently(t, 300*time.Millisecond, "the reader got each dead letter once", func() bool { return reader.Count() == n })

	// A queue that does not exist holds nothing.
	if got := browse(t, tool, unique("tool.none")); len(got) != 0 {
		t.Fatalf("missing queue: %d messages", len(got))
	}
}

// TestToolingDeadLettersWithoutMessageID: a message without a message id
// (published by another client) gets an ID from its content that stays
// the same across browses and tells it from a message with another
// payload.
func TestToolingDeadLettersWithoutMessageID(t *testing.T) {
	needAMQP(t)
	dlq := unique("tool.noid.DLQ")
	cleanup(t, []string{dlq}, nil)
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"a", "b"} {
		publishToQueue(t, dlq, amqp091.Publishing{Body: []byte(body), Headers: amqp091.Table{"k": "v"}})
	}
	tool := toolAdapter(t)
	first := browse(t, tool, dlq)
	if len(first) != 2 || first[0].ID == first[1].ID || first[0].ID == "" {
		t.Fatalf("IDs %v", ids(first))
	}
	if again := browse(t, tool, dlq); !slices.Equal(ids(again), ids(first)) {
		t.Fatalf("IDs changed: %v then %v", ids(first), ids(again))
	}
	if n, err := tool.RemoveDeadLetters(context.Background(), dlq, first[0].ID); err != nil || n != 1 {
		t.Fatalf("removed %d, %v", n, err)
	}
	if left := browse(t, tool, dlq); len(left) != 1 || string(left[0].Payload) != "b" {
		t.Fatalf("left %v", payloads(left))
	}
}

// TestToolingQuorumDeadLetterQueueRefused: a quorum dead-letter queue with
// a delivery limit would lose its dead letters to browsing (each basic.get
// counts a delivery); browsing and removal are refused before any message
// is taken, so 30 attempts leave every dead letter in place, uncounted.
func TestToolingQuorumDeadLetterQueueRefused(t *testing.T) {
	needAMQP(t)
	opts := chamqp.ChannelOptions{DeadLetterQueue: chamqp.QueueOptions{Arguments: amqp091.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int64(2)}}}
	_, dlq, _, _ := deadLettered(t, 2, chamqp.WithChannelOptions(opts))
	tool := toolAdapter(t)
	for range 30 {
		err := tool.BrowseDeadLetters(context.Background(), dlq, func(*broker.StoredMessage) bool { return true })
		if !errors.Is(err, broker.ErrUnsupported) {
			t.Fatalf("browse of a quorum queue: %v", err)
		}
		if _, err := tool.RemoveDeadLetters(context.Background(), dlq, "x"); !errors.Is(err, broker.ErrUnsupported) {
			t.Fatalf("removal from a quorum queue: %v", err)
		}
	}
	if got := queueLen(t, dlq); got != 2 {
		t.Fatalf("%d dead letters left, want 2", got)
	}
	d := getOne(t, rawChannel(t, rawConn(t)), dlq, 5*time.Second)
	if n, ok := d.Headers["x-delivery-count"]; ok && fmt.Sprint(n) != "0" {
		t.Fatalf("x-delivery-count %v: browsing counted deliveries", n)
	}
}

// TestToolingHostileDeadLetters: a dead letter with a huge (but readable)
// header table is listed with its headers read as the consumers read them,
// bounded by the frame size; one whose table the client library refuses
// ends the browse with an error at its position, on the browse's own
// connection, and every message stays in the queue.
func TestToolingHostileDeadLetters(t *testing.T) {
	needAMQP(t)
	_, dlq, _, a := deadLettered(t, 1)
	wide := amqp091.Table{}
	for i := range 8000 {
		wide["k"+strconv.Itoa(i)] = int32(i)
	}
	wide["deep"] = nested(30)
	publishToQueue(t, dlq, amqp091.Publishing{Headers: wide, MessageId: "wide", Body: []byte("wide")})
	publishToQueue(t, dlq, amqp091.Publishing{MessageId: "after-wide", Body: []byte("after-wide")})
	tool := toolAdapter(t)
	got := browse(t, tool, dlq)
	if len(got) != 3 || !strings.HasPrefix(got[1].ID, "wide~") || !strings.HasPrefix(got[2].ID, "after-wide~") {
		t.Fatalf("browsed %v", ids(got))
	}
	if n, size := len(got[1].Headers), broker.HeaderBytes(got[1].Headers); n != 8001 || size > 4*131072 {
		t.Fatalf("wide message listed with %d headers of %d bytes", n, size)
	}

	publishToQueue(t, dlq, amqp091.Publishing{Headers: amqp091.Table{"deep": nested(41)}, MessageId: "unreadable", Body: []byte("x")})
	publishToQueue(t, dlq, amqp091.Publishing{MessageId: "last", Body: []byte("last")})
	var listed []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := tool.BrowseDeadLetters(ctx, dlq, func(m *broker.StoredMessage) bool { listed = append(listed, m.ID); return true })
	if err == nil || ctx.Err() != nil || len(listed) != 3 {
		t.Fatalf("browse past an unreadable message: listed %v, error %v", listed, err)
	}
	t.Logf("browse error: %v", err)
	eventually(t, 10*time.Second, "every message back in the queue", func() bool { return queueLen(t, dlq) == 5 })
	if c := a.Connection(); c == nil || c.IsClosed() {
		t.Fatal("the plugin's connection was lost")
	}
	if c := tool.Connection(); c == nil || c.IsClosed() {
		t.Fatal("the tool adapter's connection was lost")
	}
}

// TestToolingTail: a tail sees the messages sent after it started, joins
// no group (the group still gets every message), and its queue goes when
// it returns.
func TestToolingTail(t *testing.T) {
	needAMQP(t)
	ch := unique("tool.tail")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &channelstest.Recorder{}
	p, _ := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", Handler: got.Handle}}}, nil)
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
	// The tail's queue is bound once a probe reaches it.
	probes := 0
	eventually(t, 10*time.Second, "the tail started", func() bool {
		if count() > 0 {
			return true
		}
		probes++
		if err := p.SendToChannel(context.Background(), ch, "probe"); err != nil {
			t.Fatal(err)
		}
		return false
	})
	base := count()
	for i := range 5 {
		if err := p.SendToChannel(context.Background(), ch, i, broker.WithHeader("k", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the tail saw the 5 messages", func() bool { return count() == base+5 })
	mu.Lock()
	for i, m := range tailed[base:] {
		if string(m.Payload) != strconv.Itoa(i) || m.Headers["k"] != strconv.Itoa(i) || m.Channel != ch || m.ID == "" {
			t.Errorf("tailed %d: %+v", i, m)
		}
	}
	mu.Unlock()
	eventually(t, 10*time.Second, "the group got every message", func() bool { return got.Count() == probes+5 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tail did not return after its context ended")
	}
	// A tail whose fn returns false returns.
	stopped := make(chan error, 1)
	go func() {
		stopped <- tool.Tail(context.Background(), ch, func(*broker.StoredMessage) bool { return false })
	}()
	eventually(t, 10*time.Second, "the tail returned when fn returned false", func() bool {
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatal(err)
			}
			return true
		default:
		}
		if err := p.SendToChannel(context.Background(), ch, "probe"); err != nil {
			t.Fatal(err)
		}
		return false
	})
}

// managementURL is the management API of the test RabbitMQ: the
// adapter's default (port 15672 of the AMQP URL's host) unless
// CHANNELS_AMQP_MANAGEMENT_URL says otherwise; no user info.
func managementURL(t *testing.T) string {
	t.Helper()
	if u := brokerenv.AMQPManagementURL(); u != "" {
		return u
	}
	u, err := url.Parse(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(chamqp.DefaultManagementPort))
}

// needManagement fails (CHANNELS_E2E_REQUIRE=1) or skips the test when the
// management API of the test RabbitMQ does not answer.
func needManagement(t *testing.T) {
	t.Helper()
	needAMQP(t)
	base := managementURL(t)
	brokerenv.Need(t, "rabbitmq management API at "+base, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/overview", nil)
		if err != nil {
			return err
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /api/overview: %s", res.Status)
		}
		return nil
	})
}

// TestToolingChannels: a tool that subscribed nothing lists, from the
// management API, the channels of the plugin (with their groups) and the
// dead-letter queues (with the dead letters they hold and the groups
// reading them as a channel), and a group queue's ready and unacknowledged
// messages as its Lag and Pending; only names with the prefix, sorted.
func TestToolingChannels(t *testing.T) {
	needManagement(t)
	ch, dlq, _, _ := deadLettered(t, 2)

	// A group queue declared by hand ("<group>.<channel>" bound to the
	// channel's exchange) holding 3 messages, one of them taken and not
	// acknowledged.
	lagCh := unique("tool.lag")
	cleanup(t, []string{"h." + lagCh}, []string{lagCh})
	raw := rawChannel(t, rawConn(t))
	if err := raw.ExchangeDeclare(lagCh, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDeclare("h."+lagCh, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueueBind("h."+lagCh, "", lagCh, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := raw.PublishWithContext(context.Background(), lagCh, "", false, false, amqp091.Publishing{Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the messages in the queue", func() bool { return queueLen(t, "h."+lagCh) == 3 })
	if _, ok, err := raw.Get("h."+lagCh, false); err != nil || !ok {
		t.Fatalf("basic.get: %v %v", ok, err)
	}

	tool := toolAdapter(t)
	var list []broker.ChannelInfo
	byName := func() map[string]broker.ChannelInfo {
		out := map[string]broker.ChannelInfo{}
		for _, c := range list {
			out[c.Name] = c
		}
		return out
	}
	group := func(name string, lag, pending int64) broker.GroupInfo {
		return broker.GroupInfo{Name: name, GroupLag: broker.GroupLag{Lag: lag, Pending: pending}}
	}
	// The management API refreshes its counts every few seconds.
	eventually(t, 30*time.Second, "the channels listed with their counts", func() bool {
		var err error
		if list, err = tool.Channels(context.Background(), "tool."); err != nil {
			t.Fatal(err)
		}
		m := byName()
		return reflect.DeepEqual(m[ch], broker.ChannelInfo{Name: ch, Messages: -1, Groups: []broker.GroupInfo{group("g", 0, 0)}}) &&
			reflect.DeepEqual(m[dlq], broker.ChannelInfo{Name: dlq, Messages: 2, Groups: []broker.GroupInfo{group("reader", 0, 0)}}) &&
			reflect.DeepEqual(m[lagCh], broker.ChannelInfo{Name: lagCh, Messages: -1, Groups: []broker.GroupInfo{group("h", 2, 1)}})
	})
	for _, c := range list {
		if !strings.HasPrefix(c.Name, "tool.") {
			t.Errorf("listed %q", c.Name)
		}
	}
	if !slices.IsSortedFunc(list, func(x, y broker.ChannelInfo) int { return strings.Compare(x.Name, y.Name) }) {
		t.Errorf("not sorted: %+v", list)
	}
	if list, err := tool.Channels(context.Background(), "no.such.prefix."); err != nil || len(list) != 0 {
		t.Fatalf("prefix: %+v %v", list, err)
	}
	all, err := tool.Channels(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if c.Name == "" || strings.HasPrefix(c.Name, "amq.") {
			t.Errorf("listed %q", c.Name)
		}
	}
}

// TestToolingChannelsWithoutManagement: a management API that does not
// answer, or refuses the credentials, is broker.ErrUnsupported with the
// way to enable it, and no error shows the password.
func TestToolingChannelsWithoutManagement(t *testing.T) {
	needAMQP(t)
	const secret = "s3cret-pw"
	check := func(what string, a *chamqp.Adapter) {
		t.Helper()
		_, err := a.Channels(context.Background(), "")
		if !errors.Is(err, broker.ErrUnsupported) {
			t.Fatalf("%s: %v, want ErrUnsupported", what, err)
		}
		for _, hint := range []string{"rabbitmq_management", "WithManagementURL"} {
			if !strings.Contains(err.Error(), hint) {
				t.Errorf("%s: %q does not say %s", what, err, hint)
			}
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %q shows the password", what, err)
		}
	}
	// Nothing listens on port 1.
	check("unreachable", toolAdapter(t, chamqp.WithManagementURL("http://ops:"+secret+"@127.0.0.1:1")))
	if strings.Contains(toolAdapter(t, chamqp.WithManagementURL("http://ops:"+secret+"@127.0.0.1:1")).String(), secret) {
		t.Error("String shows the password")
	}
	if _, err := chamqp.New(brokerenv.AMQPURL(), chamqp.WithManagementURL("ftp://ops:"+secret+"@127.0.0.1:1")); !errors.Is(err, broker.ErrInvalidOption) ||
		strings.Contains(err.Error(), secret) {
		t.Errorf("ftp URL: %v", err)
	}
	needManagement(t)
	u, err := url.Parse(managementURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("guest", secret)
	check("wrong password", toolAdapter(t, chamqp.WithManagementURL(u.String())))
}

// publishToQueue publishes one message straight to queue (default
// exchange), confirmed, and waits until the queue holds it.
func publishToQueue(t *testing.T, queue string, p amqp091.Publishing) {
	t.Helper()
	before := queueLen(t, queue)
	ch := rawChannel(t, rawConn(t))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", queue, true, false, p)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
		t.Fatalf("not confirmed: %v", err)
	}
	eventually(t, 5*time.Second, "the message in "+queue, func() bool { return queueLen(t, queue) == before+1 })
}

// TestToolingDeadLettersOfTwoGroups: two groups that fail one message write
// two dead letters with its message id; each has an ID of its own, and
// removing one leaves the other.
func TestToolingDeadLettersOfTwoGroups(t *testing.T) {
	needAMQP(t)
	dlq := unique("tool.two.DLQ")
	cleanup(t, []string{dlq}, nil)
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(dlq, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"g1", "g2"} {
		publishToQueue(t, dlq, amqp091.Publishing{MessageId: "same", Body: []byte("payload"),
			Headers: amqp091.Table{broker.HeaderOriginalGroup: g, broker.HeaderErrorMessage: "failed in " + g}})
	}
	tool := toolAdapter(t)
	got := browse(t, tool, dlq)
	if len(got) != 2 || got[0].ID == got[1].ID || !strings.HasPrefix(got[0].ID, "same~") || !strings.HasPrefix(got[1].ID, "same~") {
		t.Fatalf("IDs %v, want two distinct same~ IDs", ids(got))
	}
	if again := browse(t, tool, dlq); !slices.Equal(ids(again), ids(got)) {
		t.Fatalf("IDs changed: %v then %v", ids(got), ids(again))
	}
	n, err := tool.RemoveDeadLetters(context.Background(), dlq, got[0].ID)
	if err != nil || n != 1 {
		t.Fatalf("removed %d (%v), want 1", n, err)
	}
	left := browse(t, tool, dlq)
	if len(left) != 1 || left[0].ID != got[1].ID || left[0].Headers[broker.HeaderOriginalGroup] != "g2" {
		t.Fatalf("left %v, want the dead letter of g2", ids(left))
	}
	if n, err := tool.RemoveDeadLetters(context.Background(), dlq, "same"); err != nil || n != 0 {
		t.Fatalf("the bare message id removed %d (%v), want 0", n, err)
	}
}

// TestToolingQuorumTypeFound: the type of a quorum dead-letter queue is
// found whatever the tool's options say of the queue (one that calls it
// not durable made RabbitMQ name the durable property, not the type), and
// it is refused before any message is taken; a classic queue that is not
// durable or is auto-deleted is browsed.
func TestToolingQuorumTypeFound(t *testing.T) {
	needAMQP(t)
	opts := chamqp.ChannelOptions{DeadLetterQueue: chamqp.QueueOptions{Arguments: amqp091.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int64(2)}}}
	_, dlq, _, _ := deadLettered(t, 2, chamqp.WithChannelOptions(opts))
	tool := toolAdapter(t, chamqp.WithChannelOptions(chamqp.ChannelOptions{
		DeadLetterQueue: chamqp.QueueOptions{Durable: chamqp.Bool(false), AutoDelete: true}}))
	for range 5 {
		err := tool.BrowseDeadLetters(context.Background(), dlq, func(*broker.StoredMessage) bool { return true })
		if !errors.Is(err, broker.ErrUnsupported) {
			t.Fatalf("browse of a quorum queue: %v", err)
		}
	}
	d := getOne(t, rawChannel(t, rawConn(t)), dlq, 5*time.Second)
	if n, ok := d.Headers["x-delivery-count"]; ok && fmt.Sprint(n) != "0" {
		t.Fatalf("x-delivery-count %v: browsing counted deliveries", n)
	}

	for _, c := range []struct{ durable, autoDelete bool }{{false, false}, {true, true}} {
		q := unique("tool.classic.DLQ")
		cleanup(t, []string{q}, nil)
		raw := rawConn(t)
		if _, err := rawChannel(t, raw).QueueDeclare(q, c.durable, c.autoDelete, false, false, nil); err != nil {
			t.Fatal(err)
		}
		// An auto-deleted queue goes with its last consumer only: it has none.
		publishToQueue(t, q, amqp091.Publishing{MessageId: "m", Body: []byte("kept")})
		if got := browse(t, tool, q); len(got) != 1 || string(got[0].Payload) != "kept" {
			t.Fatalf("durable %v auto-delete %v: browsed %v", c.durable, c.autoDelete, payloads(got))
		}
		if got := browse(t, toolAdapter(t), q); len(got) != 1 {
			t.Fatalf("durable %v auto-delete %v, default options: browsed %v", c.durable, c.autoDelete, payloads(got))
		}
	}
}

// TestToolingGivenConnectionRefused: an adapter built on a given
// connection (NewFromClient) cannot dial one of its own, and a dead letter
// whose header table the client library refuses would close the given one
// for good: browsing, removal and tailing are refused (ErrUnsupported),
// take no message, and the connection stays open.
func TestToolingGivenConnectionRefused(t *testing.T) {
	needAMQP(t)
	dlq := unique("tool.given.DLQ")
	cleanup(t, []string{dlq}, nil)
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(dlq, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishToQueue(t, dlq, amqp091.Publishing{Headers: amqp091.Table{"deep": nested(41)}, MessageId: "unreadable", Body: []byte("x")})
	conn := rawConn(t)
	a, err := chamqp.NewFromClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	err = a.BrowseDeadLetters(ctx, dlq, func(*broker.StoredMessage) bool { return true })
	if !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("browse: %v, want ErrUnsupported", err)
	}
	if _, err := a.RemoveDeadLetters(ctx, dlq, "unreadable"); !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("removal: %v, want ErrUnsupported", err)
	}
	if err := a.Tail(ctx, dlq, func(*broker.StoredMessage) bool { return false }); !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("tail: %v, want ErrUnsupported", err)
	}
	if conn.IsClosed() {
		t.Fatal("the given connection was closed")
	}
	if got := queueLen(t, dlq); got != 1 {
		t.Fatalf("%d messages in the queue, want 1", got)
	}
}
