package ops

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/e2e/brokerenv"
)

var buildQuickstart = sync.OnceValues(func() (string, error) {
	dir, err := tempDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "quickstart")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/microchannels/channels/examples/quickstart").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./examples/quickstart: %v\n%s", err, out)
	}
	return bin, nil
})

// The quickstart leaves nothing behind: after a run in a namespace of its
// own, the broker holds none of its channels, groups, retry queues or
// dead-letter queues.
func TestQuickstartLeavesNothing(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		bin, err := buildQuickstart()
		if err != nil {
			t.Fatal(err)
		}
		ns := strings.ReplaceAll(channelstest.Unique("qs"), ".", "-")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "-adapter", tg.url(), "-namespace", ns, "-n", "60").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ok: sent = processed + dead-lettered") {
			t.Fatalf("quickstart: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "cleanup of") {
			t.Errorf("the quickstart's cleanup failed:\n%s", out)
		}
		// The adapter's own listing.
		a := opsAdapter(t, tg.url())
		cs, err := dlq.Channels(ctx, a, ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			t.Errorf("left behind: channel %s (%d messages, groups %v)", c.Name, c.Messages, c.Groups)
		}
		// The broker's own.
		for _, left := range leftovers(ctx, t, tg.name, ns) {
			t.Errorf("left behind: %s", left)
		}
	})
}

// leftovers lists what the broker holds whose name holds the namespace
// ns, beyond what its adapter lists.
func leftovers(ctx context.Context, t *testing.T, broker, ns string) []string {
	t.Helper()
	switch broker {
	case "redis", "redis-cluster":
		// Streams and the adapter's records (chan:<channel>:...).
		var c goredis.UniversalClient
		if broker == "redis" {
			o, err := goredis.ParseURL(brokerenv.RedisURL())
			if err != nil {
				t.Fatal(err)
			}
			c = goredis.NewClient(o)
		} else {
			c = goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: brokerenv.RedisClusterAddrs()})
		}
		defer c.Close()
		var mu sync.Mutex
		var keys []string
		scan := func(ctx context.Context, n *goredis.Client) error {
			iter := n.Scan(ctx, 0, "*"+ns+"*", 1000).Iterator()
			for iter.Next(ctx) {
				mu.Lock()
				keys = append(keys, "key "+iter.Val())
				mu.Unlock()
			}
			return iter.Err()
		}
		var err error
		if cc, ok := c.(*goredis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, scan)
		} else {
			err = scan(ctx, c.(*goredis.Client))
		}
		if err != nil {
			t.Fatal(err)
		}
		return keys
	case "amqp":
		// AMQP lists nothing: declare passively what the run declares.
		conn, err := amqp091.Dial(brokerenv.AMQPURL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		exists := func(declare func(ch *amqp091.Channel) error) bool {
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			err = declare(ch)
			var ae *amqp091.Error
			if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = ch.Close()
			return true
		}
		created, dead := ns+".order.created", ns+"."+dlq.DefaultQueue
		queues := []string{amqp.QueueName(created, "payments"), amqp.QueueName(dead, "orders"), dead, created}
		// Retry queues of every delay bucket up to 1 s (the backoff's are 20 to 200 ms).
		for _, g := range []string{amqp.QueueName(created, "payments"), amqp.QueueName(dead, "orders")} {
			for ms := 1; ms <= 1000; ms++ {
				q := amqp.RetryQueueName(g, time.Duration(ms)*time.Millisecond)
				if !strings.HasSuffix(q, fmt.Sprintf(".retry.%dms", ms)) {
					continue // not a bucket of its own
				}
				queues = append(queues, q)
			}
		}
		var out []string
		for _, q := range queues {
			if exists(func(ch *amqp091.Channel) error {
				_, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
				return err
			}) {
				out = append(out, "queue "+q)
			}
		}
		for _, e := range []string{created, dead} {
			if exists(func(ch *amqp091.Channel) error {
				return ch.ExchangeDeclarePassive(e, "fanout", false, false, false, false, nil)
			}) {
				out = append(out, "exchange "+e)
			}
		}
		return out
	case "kafka":
		// Consumer groups ("<group>:<topic>") outlive their topics.
		c := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...), Timeout: 10 * time.Second}
		res, err := c.ListGroups(ctx, &kafkago.ListGroupsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range res.Groups {
			if strings.Contains(g.GroupID, ns) {
				out = append(out, "consumer group "+g.GroupID)
			}
		}
		// And by name, whatever ListGroups returned.
		ids := []string{"payments:" + ns + ".order.created", "orders:" + ns + "." + dlq.DefaultQueue}
		dres, err := c.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range dres.Groups {
			if g.GroupState != "Dead" && !slices.Contains(out, "consumer group "+g.GroupID) {
				out = append(out, "consumer group "+g.GroupID+" ("+g.GroupState+")")
			}
		}
		return out
	}
	return nil // nats: the streams (and their consumers) are what Channels lists
}
