package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/kafka"
)

// The consumer of the poison-pill test runs in a child process (this test
// binary again) that exits, as a crash, when it runs the poison message.

type poisonConfig struct {
	Channel, Group, DLQ string
	Poison              int
	MaxDeliveries       int
	MaxInFlight         int
}

func TestMain(m *testing.M) { channelstest.ChildMain(m, poisonChild) }

// poisonChild consumes the channel and prints "ran <seq>" for each message
// handled; the poison message makes it exit with status 3 at once.
func poisonChild(raw string) int {
	var cfg poisonConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts := timings
	opts.Topic.Partitions = 1
	a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(opts))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out sync.Mutex
	p, err := channels.New(channels.WithAdapter(a))
	if err == nil {
		err = p.Register(&service{Name: "poison", Channels: channels.Channels{cfg.Channel: {Group: cfg.Group, MaxInFlight: cfg.MaxInFlight,
			MaxRetries: 1, MaxDeliveries: cfg.MaxDeliveries, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: cfg.DLQ},
			Handler: func(ctx context.Context, m *channels.Message) error {
				var v struct{ Seq int }
				if err := m.Decode(&v); err != nil {
					return err
				}
				if v.Seq == cfg.Poison {
					os.Exit(3) // the crash: nothing settled, nothing committed
				}
				out.Lock()
				fmt.Printf("ran %d\n", v.Seq)
				out.Unlock()
				return nil
			}}}})
	}
	if err == nil {
		err = p.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = p.Stop(ctx)
	return 0
}

// A message that kills its consumer every time it runs is found and
// dead-lettered with ErrMaxDeliveries once its runs pass MaxDeliveries,
// and every other message is processed: Kafka keeps no delivery counter,
// so the adapter counts the runs in its commit metadata after a member
// died.
func TestPoisonPillIsGivenUp(t *testing.T) { poisonPill(t, 30, 10, 3, 4) }

// TestPoisonPillPastTheCarefulWindow: with MaxInFlight 1, the member that
// takes a partition over after a crash runs one message carefully, then
// the others at full speed; the pill a few offsets further kills it before
// the next periodic commit. The run count stays on the message it was
// counted for (the commit moves past it once it is settled), so no
// innocent message is blamed, and the pill is reached, counted and given
// up.
func TestPoisonPillPastTheCarefulWindow(t *testing.T) { poisonPill(t, 12, 4, 3, 1) }

func poisonPill(t *testing.T, total, poison, maxDeliveries, maxInFlight int) {
	needKafka(t)
	ch, group, dlq := unique("poison"), "poison-group", unique("poison.DLQ")
	dead := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.Handle)}})
	opts := timings
	opts.Topic.Partitions = 1
	sender := startPlugin(t, nil)
	a, _ := kafka.New(kafkaURL(), kafka.WithChannelOptions(opts))
	// Creates the topic with one partition and the group at its start.
	setup := channelstest.StartPlugin(t, a, &service{Name: "setup", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error { return nil }}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := setup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	for i := range total {
		if err := sender.SendToChannel(context.Background(), ch, map[string]int{"seq": i}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := json.Marshal(poisonConfig{Channel: ch, Group: group, DLQ: dlq, Poison: poison, MaxDeliveries: maxDeliveries,
		MaxInFlight: maxInFlight})
	ran := map[int]int{}
	var mu sync.Mutex
	crashes := 0
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ran) == total-1 && dead.Count() == 1
	}
	for round := 0; round < 3*total && !done(); round++ {
		child := channelstest.StartChild(t, string(cfg))
		exited := make(chan error, 1)
		go func() {
			for l := range child.Lines() {
				if s, ok := strings.CutPrefix(l, "ran "); ok {
					n, _ := strconv.Atoi(s)
					mu.Lock()
					ran[n]++
					mu.Unlock()
				}
			}
			exited <- child.Wait()
		}()
		deadline := time.After(30 * time.Second)
	wait:
		for {
			select {
			case err := <-exited:
				if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
					crashes++
				} else {
					t.Fatalf("the consumer child ended with %v", err)
				}
				break wait
			case <-time.After(20 * time.Millisecond):
				if done() {
					_ = child.Signal(syscall.SIGTERM)
					<-exited
					break wait
				}
			case <-deadline:
				_ = child.Signal(syscall.SIGKILL)
				<-exited
				t.Fatalf("round %d: the consumer child neither crashed nor finished in 30s", round)
			}
		}
	}
	eventually(t, 30*time.Second, "the poison message dead-lettered", func() bool { return dead.Count() >= 1 })
	consistently(t, 500*time.Millisecond, "one dead letter", func() bool { return dead.Count() == 1 })
	m := dead.All()[0]
	var v struct{ Seq int }
	if err := m.Decode(&v); err != nil || v.Seq != poison {
		t.Fatalf("dead letter %s %v", m.Payload, err)
	}
	if !strings.Contains(m.Headers["x-error-message"], "deliveries") {
		t.Fatalf("dead-letter cause %q, want the deliveries limit", m.Headers["x-error-message"])
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range total {
		if i != poison && ran[i] == 0 {
			t.Fatalf("message %d never ran (ran: %v)", i, ran)
		}
	}
	if crashes > maxDeliveries+poison+2 {
		t.Fatalf("%d crashes before the poison was given up (MaxDeliveries %d)", crashes, maxDeliveries)
	}
	dups := 0
	for _, n := range ran {
		dups += n - 1
	}
	t.Logf("crashes=%d messages run twice or more=%d", crashes, dups)
}
