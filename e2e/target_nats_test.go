package e2e

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/jetstream"
)

// Short timings: a message of a stopped or crashed member comes back within
// the suite's deadlines.
var natsTestTimings = jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}

func init() {
	registerTarget(channelstest.Target{
		Name:           "nats",
		NewAdapter:     func() (broker.Adapter, error) { return jetstream.New(brokerenv.NATSURL()) },
		ChannelOptions: []any{natsTestTimings},
		Probe: func() error {
			return brokerenv.Probe("nats", func() error { return brokerenv.DialURL(brokerenv.NATSURL()) })
		},
		Processes: true,
		Linked: channelstest.LinkedURL(brokerenv.NATSURL, "4222", func(u string) (broker.Adapter, error) {
			return jetstream.New(u)
		}),
		ClaimTime:  natsTestTimings.AckWait,
		Restart:    natsRestart,
		BrokerDown: natsDown,
		BrokerUp:   natsUp,
		Hostile:    natsHostile,
	})
}

// natsServerID returns the id of the server answering on the test URL (""
// when none answers).
func natsServerID() string {
	nc, err := nats.Connect(brokerenv.NATSURL(), nats.Timeout(time.Second), nats.MaxReconnects(0))
	if err != nil {
		return ""
	}
	defer nc.Close()
	return nc.ConnectedServerId()
}

// natsRestart restarts the server started by scripts/services.sh (its file
// store is kept) and checks a new server answers.
func natsRestart(ctx context.Context) error {
	before := natsServerID()
	if err := services(ctx, "restart", "nats"); err != nil {
		return err
	}
	after := natsServerID()
	switch {
	case after == "":
		return errors.New("nats does not answer after the restart")
	case after == before:
		return fmt.Errorf("nats was not restarted (same server id): %s", notOurs("nats"))
	}
	return nil
}

func natsDown(ctx context.Context) error {
	if err := services(ctx, "down", "nats"); err != nil {
		return err
	}
	if natsServerID() != "" {
		return fmt.Errorf("nats still answers after down: %s", notOurs("nats"))
	}
	return nil
}

func natsUp(ctx context.Context) error {
	if err := services(ctx, "up", "nats"); err != nil {
		return err
	}
	if natsServerID() == "" {
		return errors.New("nats does not answer after up")
	}
	return nil
}

// natsHostile publishes a raw payload with plain nats.go. A NATS message has
// no payload field to leave out and no serialized headers blob (headers are
// header lines, parsed by the server and the client), so those entries are
// unsupported.
func natsHostile(ctx context.Context, channel string, e channelstest.RawEntry) (string, error) {
	if e.NoPayload || e.Headers != nil {
		return "", fmt.Errorf("nats has no payload field to omit and no headers blob: %w", errors.ErrUnsupported)
	}
	nc, err := nats.Connect(brokerenv.NATSURL())
	if err != nil {
		return "", err
	}
	defer nc.Close()
	j, err := js.New(nc)
	if err != nil {
		return "", err
	}
	ack, err := j.Publish(ctx, channel, e.Payload)
	if errors.Is(err, js.ErrNoStreamResponse) {
		if _, err = j.CreateOrUpdateStream(ctx, js.StreamConfig{Name: jetstream.StreamName(channel), Subjects: []string{channel}}); err == nil {
			ack, err = j.Publish(ctx, channel, e.Payload)
		}
	}
	if err != nil {
		return "", err
	}
	return strconv.FormatUint(ack.Sequence, 10), nil
}
