package smoke

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/e2e/brokerenv"
)

func unique(base string) string {
	return fmt.Sprintf("smoke.%s.%d.%d", base, os.Getpid(), time.Now().UnixNano())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamRoundTrip(ctx context.Context, t *testing.T, c redis.UniversalClient) {
	t.Helper()
	stream, group := unique("stream"), "smoke"
	if err := c.XGroupCreateMkStream(ctx, stream, group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Del(context.Background(), stream) })
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"payload", `{"n":1}`}}).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: 1, Block: 5 * time.Second}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Messages) != 1 || res[0].Messages[0].Values["payload"] != `{"n":1}` {
		t.Fatalf("read %+v", res)
	}
	if n, err := c.XAck(ctx, stream, group, res[0].Messages[0].ID).Result(); err != nil || n != 1 {
		t.Fatalf("XACK %d %v", n, err)
	}
}

func TestRedis(t *testing.T) {
	opts, err := redis.ParseURL(brokerenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() }) // after the streams' own cleanups
	ctx := testCtx(t)
	brokerenv.Need(t, "redis", func() error { return c.Ping(ctx).Err() })
	streamRoundTrip(ctx, t, c)
}

func TestRedisCluster(t *testing.T) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: brokerenv.RedisClusterAddrs()})
	t.Cleanup(func() { _ = c.Close() }) // after the streams' own cleanups
	ctx := testCtx(t)
	brokerenv.Need(t, "redis-cluster", func() error {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errors.New("cluster_state is not ok")
		}
		return err
	})
	for range 3 { // several keys, so several slots and nodes
		streamRoundTrip(ctx, t, c)
	}
}

func TestAMQP(t *testing.T) {
	ctx := testCtx(t)
	brokerenv.Need(t, "amqp", func() error {
		c, err := amqp.Dial(brokerenv.AMQPURL())
		if err != nil {
			return err
		}
		return c.Close()
	})
	conn, err := amqp.Dial(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ex, q := unique("exchange"), unique("queue")
	if err := ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, ex, "", false, false,
		amqp.Publishing{Body: []byte(`{"n":1}`), Headers: amqp.Table{"k": "v"}, DeliveryMode: amqp.Persistent})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := conf.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("publisher confirm: %v %v", ok, err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, q, "smoke", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != `{"n":1}` || d.Headers["k"] != "v" {
			t.Fatalf("got %s %v", d.Body, d.Headers)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
}

func TestNATSJetStream(t *testing.T) {
	ctx := testCtx(t)
	brokerenv.Need(t, "nats", func() error {
		c, err := nats.Connect(brokerenv.NATSURL(), nats.Timeout(3*time.Second))
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	nc, err := nats.Connect(brokerenv.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("SMOKE_%d_%d", os.Getpid(), time.Now().UnixNano())
	subject := "smoke." + name
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	msg := nats.NewMsg(subject)
	msg.Data = []byte(`{"n":1}`)
	msg.Header.Set("k", "v")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "smoke", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 1 || string(got[0].Data()) != `{"n":1}` || got[0].Headers().Get("k") != "v" {
		t.Fatalf("fetched %d messages (%v)", len(got), batch.Error())
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKafka(t *testing.T) {
	ctx := testCtx(t)
	brokers := brokerenv.KafkaBrokers()
	brokerenv.Need(t, "kafka", func() error {
		c, err := kafka.DialContext(ctx, "tcp", brokers[0])
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Brokers()
		return err
	})
	topic := unique("topic")
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors[topic]; err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(`{"n":1}`), Headers: []kafka.Header{{Key: "k", Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "smoke", Topic: topic, StartOffset: kafka.FirstOffset,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Value) != `{"n":1}` || len(m.Headers) != 1 || string(m.Headers[0].Value) != "v" {
		t.Fatalf("got %s %v", m.Value, m.Headers)
	}
	if err := r.CommitMessages(ctx, m); err != nil {
		t.Fatal(err)
	}
}
