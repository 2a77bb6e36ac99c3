package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
	"github.com/onsi/gomega"

	"github.com/microchannels/channels/channelstest/linkfault"
)

// pullServer runs a private server and returns a connection to it (through
// link when link is set) and a JetStream context.
func pullServer(t *testing.T, proxied bool) (*nats.Conn, js.JetStream, *linkfault.Link) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	url := srv.ClientURL()
	var link *linkfault.Link
	if proxied {
		link = linkfault.New(t, srv.Addr().String())
		url = "nats://" + link.Addr()
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	j, _ := js.New(nc)
	return nc, j, link
}

func pullConsumer(t *testing.T, j js.JetStream) {
	t.Helper()
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "p", Subjects: []string{"p"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.CreateConsumer(ctx, "p", js.ConsumerConfig{Durable: "g", AckPolicy: js.AckExplicitPolicy, AckWait: time.Second}); err != nil {
		t.Fatal(err)
	}
}

// A message answering a pull given up by the client (here its ctx ended
// while the server still held the request) is tracked as it arrives, with
// no fetch running, and handed to the next fetch.
func TestPullTracksAnswersOfGivenUpRequests(t *testing.T) {
	nc, j, _ := pullServer(t, false)
	pullConsumer(t, j)
	var arrived, orphans atomic.Int32
	p, err := newPuller(nc, "p", "g", func(m *nats.Msg) *delivery { arrived.Add(1); return &delivery{m: &rawMsg{Msg: m, nc: nc}} },
		func(*nats.Msg) { orphans.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the fetch gives up at once; the request stays on the server
	if err := p.fetch(ctx, 1, 5*time.Second, 0, func([]*delivery) {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch: %v", err)
	}
	if _, err := j.Publish(context.Background(), "p", []byte("late")); err != nil {
		t.Fatal(err)
	}
	g := gomega.NewWithT(t)
	g.Eventually(arrived.Load).WithTimeout(5 * time.Second).WithPolling(10 * time.Millisecond).Should(gomega.BeEquivalentTo(1))
	var held []*delivery
	if err := p.fetch(context.Background(), 1, time.Second, 0, func(ds []*delivery) { held = append(held, ds...) }); err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || string(held[0].m.Data()) != "late" {
		t.Fatalf("the next fetch handed over %d messages", len(held))
	}
	if orphans.Load() != 0 {
		t.Fatal("a message of a request the server still held was taken for an orphan")
	}
}

// A pull the server accepted (waiting on the consumer) that then gets
// nothing, not even an idle heartbeat, for twice its heartbeat is taken
// for dead (a server that stopped heartbeating it): fetch returns
// errPullSilent well before its expiry.
func TestPullMissedHeartbeatEndsThePull(t *testing.T) {
	nc, j, link := pullServer(t, true)
	pullConsumer(t, j)
	p, err := newPuller(nc, "p", "g", func(m *nats.Msg) *delivery { return &delivery{m: &rawMsg{Msg: m, nc: nc}} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	defer link.Heal()
	var beats atomic.Int32 // idle heartbeats answering the pull
	if _, err := nc.Subscribe(p.inbox+"*", func(m *nats.Msg) {
		if m.Header.Get("Status") == "100" {
			beats.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- p.fetch(context.Background(), 1, 6*time.Second, 500*time.Millisecond, func([]*delivery) {})
	}()
	g := gomega.NewWithT(t)
	g.Eventually(func() int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := j.Consumer(ctx, "p", "g")
		if err != nil {
			return -1
		}
		return c.CachedInfo().NumWaiting
	}).WithTimeout(5*time.Second).WithPolling(20*time.Millisecond).Should(gomega.Equal(1), "the server holds the pull")
	g.Eventually(beats.Load).WithTimeout(5*time.Second).WithPolling(10*time.Millisecond).Should(gomega.BeNumerically(">=", 1), "a heartbeat arrived")
	link.Freeze()
	frozen := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, errPullSilent) {
			t.Fatalf("fetch on a pull gone silent: %v, want errPullSilent", err)
		}
	case <-time.After(3 * time.Second): // well before the 6 s expiry
		t.Fatalf("fetch still waiting %s after the pull went silent", time.Since(frozen))
	}
}

// drain returns by its ctx even when the server never confirms the
// unsubscription (a frozen link).
func TestPullDrainReturnsByCtx(t *testing.T) {
	nc, j, link := pullServer(t, true)
	pullConsumer(t, j)
	p, err := newPuller(nc, "p", "g", func(m *nats.Msg) *delivery { return &delivery{m: &rawMsg{Msg: m, nc: nc}} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	link.Freeze()
	defer link.Heal()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { p.drain(ctx, func([]*delivery) {}); close(done) }()
	select {
	case <-done:
	case <-time.After(minPullExpiry - 300*time.Millisecond):
		t.Fatal("drain outlived its ctx")
	}
}

// anyOpen answers from the oldest request still open: requests ended or
// past their time are forgotten (a pull per message leaves thousands
// whose messages all came), one still open is found behind them.
func TestPullAnyOpenForgetsEndedAndExpired(t *testing.T) {
	p := &puller{open: map[string]time.Time{}}
	now := time.Now()
	add := func(reply string, until time.Time) {
		p.open[reply] = until
		p.asked = append(p.asked, reply)
	}
	if p.anyOpen() {
		t.Fatal("open with no request")
	}
	for i := range 10000 {
		add(fmt.Sprintf("past.%d", i), now.Add(-time.Second))
	}
	add("ended", now.Add(time.Hour))
	p.ended("ended")
	add("live", now.Add(time.Hour))
	add("after", now.Add(-time.Second))
	if !p.anyOpen() {
		t.Fatal("a request still open not seen")
	}
	if len(p.asked) != 2 || p.asked[0] != "live" {
		t.Fatalf("requests kept: %d (first %q), want live and after", len(p.asked), p.asked[0])
	}
	p.ended("live")
	if p.anyOpen() {
		t.Fatal("open after every request ended or expired")
	}
	if len(p.asked) != 0 || len(p.open) != 0 {
		t.Fatalf("kept %d requests, %d open", len(p.asked), len(p.open))
	}
}

// TestPullRequestsForgottenWithoutArrivals: a subscription that receives
// nothing keeps no list of its past requests: each fetch forgets those
// that ended or expired.
func TestPullRequestsForgottenWithoutArrivals(t *testing.T) {
	p := &puller{open: map[string]time.Time{}, inbox: "_INBOX.x.", subject: "$JS.API.CONSUMER.MSG.NEXT.s.c"}
	for range 1000 {
		reply, _ := p.ask(time.Hour)
		p.ended(reply)
	}
	if len(p.asked) > 1 || len(p.open) > 1 {
		t.Fatalf("kept %d requests, %d open, after 1000 that ended", len(p.asked), len(p.open))
	}
}
