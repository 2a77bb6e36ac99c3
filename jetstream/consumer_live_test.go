package jetstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// updateConsumer changes the group's consumer as another member would.
func updateConsumer(t *testing.T, j js.JetStream, stream, durable string, edit func(*js.ConsumerConfig)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := j.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	edit(&cfg)
	if _, err := j.UpdateConsumer(ctx, stream, cfg); err != nil {
		t.Fatal(err)
	}
}

// A member's handler keeps its message when another member lowers the
// consumer's AckWait (10 s to 500 ms) while it runs: the message runs once.
func TestInProgressFollowsAckWaitLoweredWhileRunning(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	var runs counter
	var mu sync.Mutex
	var started time.Time
	release := make(chan struct{})
	slow := func(ctx context.Context, _ *channels.Message) error {
		mu.Lock()
		if started.IsZero() {
			started = time.Now()
		}
		mu.Unlock()
		runs.inc()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	long := jetstream.ChannelOptions{AckWait: 10 * time.Second, FetchTimeout: time.Second}
	startPlugin(t, newAdapter(t, url, long), &service{Name: "lw", Channels: channels.Channels{
		"lw.topic": {Group: "g", MaxInFlight: 2, Handler: slow}}})
	snd := startPlugin(t, newAdapter(t, url, long), nil)
	if err := snd.SendToChannel(ctx, "lw.topic", 1); err != nil {
		t.Fatal(err)
	}
	// Past the first reports of the run (AckWait/3 apart), AckWait drops.
	eventually(t, 10*time.Second, "running for 1.5 s", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !started.IsZero() && time.Since(started) >= 1500*time.Millisecond
	})
	updateConsumer(t, j, "lw_topic", "g", func(c *js.ConsumerConfig) { c.AckWait = 500 * time.Millisecond })
	consistently(t, 2500*time.Millisecond, "one run", func() bool { return runs.get() == 1 })
	close(release)
	eventually(t, 5*time.Second, "acknowledged", func() bool { return consumerIdle(j, "lw_topic", "g") })
}

// A consumer deleted and created again while its member had no pull
// outstanding (so no 409 told it) gets failure records of its own: the
// new consumer's first message dead-letters under a new id, not
// deduplicated against the old consumer's dead letter of the same
// sequence.
func TestRecordsFollowConsumerRecreatedUnseen(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	release := make(chan struct{})
	var blocked counter
	h := func(ctx context.Context, m *channels.Message) error {
		var body string
		_ = m.Decode(&body)
		switch body {
		case "fail":
			return channels.Permanent(errBoom)
		case "block":
			blocked.inc()
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}
	o := fast
	o.DeliverPolicy = jetstream.DeliverAll
	startPlugin(t, newAdapter(t, url, o), &service{Name: "rc", Channels: channels.Channels{"rc.topic": {Group: "g",
		MaxInFlight: 1, Handler: h, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "RC_DLQ"}}}})
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "rc.topic", "fail"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first dead letter", func() bool { return streamMsgs(j, "RC_DLQ") == 1 })
	// One message runs, one is held: no pull is outstanding.
	for range 2 {
		if err := snd.SendToChannel(ctx, "rc.topic", "block"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "blocked", func() bool { return blocked.get() == 1 })
	eventually(t, 10*time.Second, "one held", func() bool {
		c, err := j.Consumer(ctx, "rc_topic", "g")
		return err == nil && c.CachedInfo().NumAckPending == 2 && c.CachedInfo().NumWaiting == 0
	})
	c, err := j.Consumer(ctx, "rc_topic", "g")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if err := j.DeleteConsumer(ctx, "rc_topic", "g"); err != nil {
		t.Fatal(err)
	}
	cfg.DeliverPolicy = js.DeliverAllPolicy
	if _, err := j.CreateConsumer(ctx, "rc_topic", cfg); err != nil {
		t.Fatal(err)
	}
	close(release)
	// The new consumer delivers "fail" (sequence 1) again: a new dead letter.
	eventually(t, 15*time.Second, "second dead letter", func() bool { return streamMsgs(j, "RC_DLQ") == 2 })
}

// The server's MAX_DELIVERIES advisory for the group's consumer (here
// MaxDeliver lowered to 2 by someone else) is logged.
func TestMaxDeliveriesAdvisoryLogged(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	var logs logSink
	fail := func(context.Context, *channels.Message) error { return errBoom }
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "md", Channels: channels.Channels{"md.topic": {Group: "g",
		MaxRetries: 5, Backoff: broker.ConstantBackoff(10 * time.Millisecond), Handler: fail}}},
		channels.WithLogger(logs.logger()))
	updateConsumer(t, j, "md_topic", "g", func(c *js.ConsumerConfig) { c.MaxDeliver = 2 })
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "md.topic", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "advisory logged", func() bool {
		return logs.count("the server stopped delivering a message") == 1
	})
}

// A MaxDeliver under MinMaxDeliver is refused with a *MaxDeliverError (an
// ErrInvalidOption) by Register, where the channel is declared; unset, the
// consumer gets at least MinMaxDeliver.
func TestMaxDeliverValidatedAgainstRetries(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	noop := func(context.Context, *channels.Message) error { return nil }
	o := fast
	o.MaxDeliver = 20
	p, err := channels.New(channels.WithAdapter(newAdapter(t, url, o)))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Register(&service{Name: "mv", Channels: channels.Channels{"mv.topic": {Group: "g", MaxRetries: 9, Handler: noop}}})
	var mde *jetstream.MaxDeliverError
	if !errors.As(err, &mde) || !errors.Is(err, broker.ErrInvalidOption) || mde.Min != 4*(10+broker.DefaultExtraDeliveries) {
		t.Fatalf("Register: %v, want a *MaxDeliverError wrapping ErrInvalidOption", err)
	}
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "mv2", Channels: channels.Channels{
		"mv.topic": {Group: "many", MaxRetries: 300, Handler: noop}}})
	c, err := j.Consumer(ctx, "mv_topic", "many")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.MaxDeliver; got != 4*(301+broker.DefaultExtraDeliveries) {
		t.Fatalf("MaxDeliver %d", got)
	}
}

// A sender that saw the stream recreates it when another process removed
// it, and the send succeeds.
func TestSendRecreatesStreamRemovedElsewhere(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "gone.topic", 1); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteStream(ctx, "gone_topic"); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendToChannel(ctx, "gone.topic", 2); err != nil {
		t.Fatalf("send after the stream was removed elsewhere: %v", err)
	}
	if n := streamMsgs(j, "gone_topic"); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

// An existing consumer with request limits (MaxRequestBatch 1,
// MaxRequestExpires 300 ms) is pulled within them: every message is
// handled with MaxInFlight 4 and FetchTimeout 1 s.
func TestPullWithinConsumerRequestLimits(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "lim_topic", Subjects: []string{"lim.topic"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.CreateConsumer(ctx, "lim_topic", js.ConsumerConfig{Durable: "g", AckPolicy: js.AckExplicitPolicy,
		FilterSubject: "lim.topic", MaxRequestBatch: 1, MaxRequestExpires: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var got counter
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "lim", Channels: channels.Channels{"lim.topic": {Group: "g",
		MaxInFlight: 4, Handler: func(context.Context, *channels.Message) error { got.inc(); return nil }}}})
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	for i := range 5 {
		if err := snd.SendToChannel(ctx, "lim.topic", i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every message", func() bool { return got.get() == 5 })
}

// Pull requests ask for an idle heartbeat (half the expiry, at most 5 s),
// so that a silent server or link is noticed.
func TestPullAsksIdleHeartbeat(t *testing.T) {
	url, _ := startServer(t)
	nc, _ := jsOn(t, url)
	reqs := make(chan []byte, 16)
	if _, err := nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT.hb_topic.g", func(m *nats.Msg) {
		select {
		case reqs <- m.Data:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "hb", Channels: channels.Channels{"hb.topic": {Group: "g",
		Handler: func(context.Context, *channels.Message) error { return nil }}}})
	select {
	case b := <-reqs:
		var r struct {
			Expires   time.Duration `json:"expires"`
			Heartbeat time.Duration `json:"idle_heartbeat"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Heartbeat != r.Expires/2 || r.Expires != time.Second {
			t.Fatalf("pull request %s: want an idle heartbeat of half the expiry", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pull request seen")
	}
}

// While a handler runs, the consumer is read at the slow interval
// (AckWait/2, at least 5 s): at most once in 3 s with AckWait 2 s, and
// again within the next interval; not at all while idle.
func TestConsumerInfoAtSlowInterval(t *testing.T) {
	url, _ := startServer(t)
	nc, _ := jsOn(t, url)
	ctx := context.Background()
	var infos counter
	if _, err := nc.Subscribe("$JS.API.CONSUMER.INFO.ci_topic.g", func(*nats.Msg) { infos.inc() }); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var runs counter
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "ci", Channels: channels.Channels{"ci.topic": {Group: "g",
		Handler: func(ctx context.Context, _ *channels.Message) error {
			runs.inc()
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	from := infos.get() // the reads of the subscription itself
	consistently(t, 2*time.Second, "no read while idle", func() bool { return infos.get() == from })
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "ci.topic", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "running", func() bool { return runs.get() == 1 })
	consistently(t, 3*time.Second, "at most one read", func() bool { return infos.get() <= from+1 })
	// And read again at the slow interval (5 s here) while it runs.
	at := infos.get()
	eventually(t, 7*time.Second, "read again at the slow interval", func() bool { return infos.get() > at })
	close(release)
}

// A batch from a sender that saw the stream recreates it when another
// process removed it: every message of the batch is stored.
func TestBatchRecreatesStreamRemovedElsewhere(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendBatch(ctx, "goneb.topic", channels.BatchOf(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteStream(ctx, "goneb_topic"); err != nil {
		t.Fatal(err)
	}
	if err := snd.SendBatch(ctx, "goneb.topic", channels.BatchOf(3, 4, 5)); err != nil {
		t.Fatalf("batch after the stream was removed elsewhere: %v", err)
	}
	if n := streamMsgs(j, "goneb_topic"); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}
