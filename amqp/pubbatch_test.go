package amqp

import (
	"testing"
	"time"

	"github.com/onsi/gomega"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestDrainReturnsClosedChannel: amqp091 closes a channel's returns with
// the channel; draining them must end instead of receiving the zero value
// of the closed channel forever.
func TestDrainReturnsClosedChannel(t *testing.T) {
	c := make(chan amqp091.Return, 4)
	c <- amqp091.Return{MessageId: "old"}
	close(c)
	done := make(chan struct{})
	go func() { drainReturns(c); close(done) }()
	isDone := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	gomega.NewWithT(t).Eventually(isDone).WithTimeout(2*time.Second).WithPolling(10*time.Millisecond).
		Should(gomega.BeTrue(), "drainReturns spins on a closed returns channel")
}
