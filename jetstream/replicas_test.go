package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

func TestWithReplicasRefusesNegative(t *testing.T) {
	if _, err := jetstream.New("nats://127.0.0.1:4222", jetstream.WithReplicas(-1)); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("err = %v, want ErrInvalidOption", err)
	}
}

// More replicas than the (single-node) server can hold is the server's
// error at Start, never a silently smaller stream.
func TestWithReplicasProvisioning(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()

	handler := func(context.Context, *channels.Message) error { return nil }

	// The adapter's 3 on one server: Start fails with the server's error.
	b := newAdapter(t, url, fast, jetstream.WithReplicas(3))
	p, err := channels.New(channels.WithAdapter(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "r3", Channels: channels.Channels{"replicas.three": {Handler: handler}}}); err != nil {
		t.Fatal(err)
	}
	err = p.Start(ctx)
	defer p.Stop(context.Background())
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("Start with 3 replicas on a single server: err = %v, want the server's refusal", err)
	}
	if _, serr := j.Stream(ctx, "replicas_three"); !errors.Is(serr, js.ErrStreamNotFound) {
		t.Fatalf("stream replicas_three: %v, want none (err of Start: %v)", serr, err)
	}
}
