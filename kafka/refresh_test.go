package kafka

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// testBroker is the Kafka broker of the tests that need one (skipped when
// it does not answer).
func testBroker(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("CHANNELS_KAFKA_ADDR")
	if addr == "" {
		addr = "127.0.0.1:9092"
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("CHANNELS_E2E_REQUIRE") == "1" {
			t.Fatalf("no Kafka broker at %s with CHANNELS_E2E_REQUIRE=1: %v", addr, err)
		}
		t.Skipf("no Kafka broker at %s: %v", addr, err)
	}
	c.Close()
	return addr
}

// After a topic's partitions were increased, the sends' partition list is
// refreshed: keys hash over the new count, as other producers' do.
func TestSendPartitionsAreRefreshed(t *testing.T) {
	addr := testBroker(t)
	defer func(d time.Duration) { partitionRefresh = d }(partitionRefresh)
	partitionRefresh = 200 * time.Millisecond
	a, err := NewFromBrokers([]string{addr}, WithChannelOptions(ChannelOptions{Topic: TopicOptions{Partitions: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	topic := fmt.Sprintf("refresh.%d.%d", os.Getpid(), time.Now().UnixNano())
	send := func(key string) {
		t.Helper()
		out := &broker.Outgoing{Payload: []byte(`"x"`), Options: broker.PublishOptions{AdapterOptions: []any{SendOptions{Key: []byte(key)}}}}
		if err := a.Publish(ctx, topic, out); err != nil {
			t.Fatal(err)
		}
	}
	send("warm")
	res, err := a.Client().CreatePartitions(ctx, &kafkago.CreatePartitionsRequest{Topics: []kafkago.TopicPartitionsConfig{{Name: topic, Count: 8}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(func() int {
		send("warm") // a send past partitionRefresh refreshes the list
		c, _ := a.conn()
		ids, _ := a.partitionsOf(ctx, c, topic)
		return len(ids)
	}).WithTimeout(20*time.Second).WithPolling(50*time.Millisecond).Should(gomega.Equal(8), "the partitions the sends hash over")
	// A key that hashes to a new partition is written there.
	var key string
	for i := 0; ; i++ {
		key = fmt.Sprintf("k%d", i)
		if p := (&kafkago.Murmur2Balancer{}).Balance(kafkago.Message{Key: []byte(key)}, 0, 1, 2, 3, 4, 5, 6, 7); p >= 2 {
			break
		}
	}
	send(key)
	lo, err := a.Client().ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: {
		kafkago.LastOffsetOf(2), kafkago.LastOffsetOf(3), kafkago.LastOffsetOf(4), kafkago.LastOffsetOf(5), kafkago.LastOffsetOf(6), kafkago.LastOffsetOf(7)}}})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range lo.Topics[topic] {
		n += p.LastOffset
	}
	if n != 1 {
		t.Fatalf("%d messages in the new partitions, want 1", n)
	}
}
