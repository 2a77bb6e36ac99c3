package amqp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestConsumerCancelledByBroker: deleting the group queue under a running
// consumer (RabbitMQ cancels it) makes the subscription declare its
// topology again and resume; later sends arrive.
func TestConsumerCancelledByBroker(t *testing.T) {
	needAMQP(t)
	ch := unique("recover.cancel")
	queue := "g." + ch
	cleanup(t, []string{queue}, []string{ch})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", Handler: got.Handle}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	ctx := context.Background()
	if err := snd.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first message", func() bool { return got.Count() == 1 })
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	// The queue comes back (declared again by the resumed consumer).
	eventually(t, 15*time.Second, "queue declared again", func() bool {
		c := rawChannel(t, rawConn(t))
		_, err := c.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil
	})
	// The queue may be back before its binding: a mandatory send is returned
	// (an error) until the exchange routes to the queue again.
	eventually(t, 15*time.Second, "queue bound again", func() bool {
		return snd.SendToChannel(ctx, ch, 2, chamqp.WithMandatory()) == nil
	})
	eventually(t, 10*time.Second, "message after the resume", func() bool { return got.Count() == 2 })
}

// TestConnectionClosedByBroker: the broker closes the adapter's connection
// (rabbitmqctl close_connection); the adapter dials again, the consumer
// resumes and sends work again, nothing sent before or after is lost.
func TestConnectionClosedByBroker(t *testing.T) {
	needAMQP(t)
	brokerenv.Need(t, "rabbitmqctl", func() error { _, err := rabbitmqctl("status"); return err })
	ch := unique("recover.conn")
	cleanup(t, []string{"g." + ch}, []string{ch})
	got := &channelstest.Recorder{}
	_, ca := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 4, Handler: got.Handle}}},
		[]chamqp.Option{chamqp.WithReconnectBackoff(broker.ConstantBackoff(100 * time.Millisecond))})
	snd, sa := startPlugin(t, nil, []chamqp.Option{chamqp.WithReconnectBackoff(broker.ConstantBackoff(100 * time.Millisecond))})
	ctx := context.Background()
	for i := range 5 {
		if err := snd.SendToChannel(ctx, ch, i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "5 messages", func() bool { return got.Count() == 5 })
	for _, a := range []*chamqp.Adapter{ca, sa} {
		closeConnection(t, a)
	}
	// Sends fail while the connection is down, then succeed again.
	sent := 5
	eventually(t, 30*time.Second, "sends work again", func() bool {
		if snd.SendToChannel(ctx, ch, sent) == nil {
			sent++
			return true
		}
		return false
	})
	for i := sent; i < sent+5; i++ {
		if err := snd.SendToChannel(ctx, ch, i); err != nil {
			t.Fatal(err)
		}
	}
	sent += 5
	eventually(t, 30*time.Second, fmt.Sprintf("%d messages", sent), func() bool { return got.Count() >= sent })
	seen := map[string]bool{}
	for _, m := range got.All() {
		seen[string(m.Payload)] = true
	}
	for i := range sent {
		if !seen[fmt.Sprint(i)] {
			t.Errorf("message %d missing", i)
		}
	}
}

// closeConnection asks RabbitMQ to close a's connection.
func closeConnection(t *testing.T, a *chamqp.Adapter) {
	t.Helper()
	conns := []*amqp091.Connection{a.Connection()}
	if c := a.ConsumerConnection(); c != nil {
		conns = append(conns, c)
	}
	if conns[0] == nil {
		t.Fatal("adapter not connected")
	}
	out, err := rabbitmqctl("list_connections", "pid", "peer_port")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		port := c.LocalAddr().(*net.TCPAddr).Port
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[1] == fmt.Sprint(port) {
				if _, err := rabbitmqctl("close_connection", f[0], "test: connection closed by the broker"); err != nil {
					t.Fatal(err)
				}
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("connection from port %d not found in\n%s", port, out)
		}
	}
}

func rabbitmqctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	node := os.Getenv("CHANNELS_RABBITMQ_NODE") // the node behind CHANNELS_AMQP_URL
	if node == "" {
		node = "rabbit@localhost"
	}
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q", "-n", node}, args...)...)
	cmd.Env = append(os.Environ(), "RABBITMQ_NODENAME="+node, "ERL_EPMD_ADDRESS=127.0.0.1")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("rabbitmqctl %v: %v: %s", args, err, stderr.String())
	}
	return out.String(), nil
}
