package kafka

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// produceTimingOut answers every produce request with the leader's
// REQUEST_TIMED_OUT: the records may have been written.
type produceTimingOut struct{ requests atomic.Int32 }

func (f *produceTimingOut) RoundTrip(_ context.Context, _ net.Addr, m protocol.Message) (protocol.Message, error) {
	req, ok := m.(*produceAPI.Request)
	if !ok {
		return nil, errors.New("unexpected request")
	}
	f.requests.Add(1)
	res := &produceAPI.Response{}
	for _, t := range req.Topics {
		rt := produceAPI.ResponseTopic{Topic: t.Topic}
		for _, p := range t.Partitions {
			rt.Partitions = append(rt.Partitions, produceAPI.ResponsePartition{Partition: p.Partition, ErrorCode: int16(kafkago.RequestTimedOut)})
		}
		res.Topics = append(res.Topics, rt)
	}
	return res, nil
}

// A write whose outcome is unknown (the leader timed out replicating it)
// is not sent again, and its send reports the unknown outcome rather than
// a success or a plain failure.
func TestAmbiguousWriteIsNotSentAgain(t *testing.T) {
	f := &produceTimingOut{}
	c := &conn{client: &kafkago.Client{Addr: kafkago.TCP("127.0.0.1:1"), Transport: f}}
	q := &queue{key: queueKey{topic: "t", partition: 0, acks: AcksAll}, c: c, max: 10}
	cl := &call{errs: make([]error, 1), set: make([]bool, 1), left: 1, done: make(chan struct{})}
	q.write([]*send{{value: []byte(`"x"`), call: cl}}, 1)
	<-cl.done
	if n := f.requests.Load(); n != 1 {
		t.Fatalf("the write was sent %d times", n)
	}
	if !errors.Is(cl.errs[0], ErrWriteUnknown) || !errors.Is(cl.errs[0], kafkago.RequestTimedOut) {
		t.Fatalf("reported %v, want the unknown outcome", cl.errs[0])
	}
}

// produceFailing fails every produce request with err.
type produceFailing struct {
	err      error
	requests atomic.Int32
}

func (f *produceFailing) RoundTrip(context.Context, net.Addr, protocol.Message) (protocol.Message, error) {
	f.requests.Add(1)
	return nil, f.err
}

// A connection that ends while the answer is awaited (reset, end of
// stream) leaves the write's outcome unknown: it is reported so and not
// sent again. One that fails while the request is written is a plain
// failure.
func TestConnectionLostAfterTheRequestIsAmbiguous(t *testing.T) {
	reset := func(op string) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, syscall.ECONNRESET)}
	}
	for _, tc := range []struct {
		name    string
		err     error
		unknown bool
	}{
		{"reset on read", reset("read"), true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"reset on write", reset("write"), false},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &produceFailing{err: tc.err}
			c := &conn{client: &kafkago.Client{Addr: kafkago.TCP("127.0.0.1:1"), Transport: f}}
			q := &queue{key: queueKey{topic: "t", partition: 0, acks: AcksAll}, c: c, max: 10}
			cl := &call{errs: make([]error, 1), set: make([]bool, 1), left: 1, done: make(chan struct{})}
			q.write([]*send{{value: []byte(`"x"`), call: cl}}, 1)
			<-cl.done
			if n := f.requests.Load(); n != 1 {
				t.Fatalf("the write was sent %d times", n)
			}
			if got := errors.Is(cl.errs[0], ErrWriteUnknown); got != tc.unknown {
				t.Fatalf("reported %v: unknown outcome %v, want %v", cl.errs[0], got, tc.unknown)
			}
		})
	}
}
