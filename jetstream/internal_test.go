package jetstream

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// A dead letter published twice for one message (its acknowledgement lost,
// the publish tried again) is stored once: it carries a message id.
func TestDeadLetterPublishedOnce(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	j, _ := js.New(nc)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "DLQ", Subjects: []string{"DLQ"}}); err != nil {
		t.Fatal(err)
	}
	s := &subscription{c: &conn{nc: nc, js: j}, ch: &broker.Channel{Name: "c", DeadLetter: broker.DeadLetterPolicy{Enabled: true, Queue: "DLQ"}}}
	d := &delivery{s: s, seq: 7, recs: records{prefix: "c.g.1."}}
	for range 2 {
		if err := d.DeadLetter(ctx, []byte("x"), map[string]string{"x-error-message": "boom"}); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := j.Stream(ctx, "DLQ")
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("the dead-letter stream holds %d copies, want 1", n)
	}
}
