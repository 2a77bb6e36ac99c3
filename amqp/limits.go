package amqp

import (
	"fmt"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// defaultFrameMax is RabbitMQ's default frame_max, and what amqp091 asks
// for when Config.FrameSize is 0.
const defaultFrameMax = 131072

// frameOverhead is what a content-header frame holds besides the headers
// table: the frame's own header and end byte (8), class, weight, body size
// and property flags (14), the nine short-string properties at their
// largest (9 × 256), delivery mode, priority and timestamp (10); plus
// headerReserve for the headers this adapter adds to a copy it publishes
// (x-group, x-channels-unfinished, x-channels-final, x-redelivered-count).
const (
	frameOverhead = 8 + 14 + 9*256 + 10
	headerReserve = 1024
)

var _ broker.Limiter = (*Adapter)(nil)

// Limits reports the header budget of one message: RabbitMQ refuses a
// content-header frame over the connection's negotiated frame_max with a
// connection error (FRAME_ERROR), which would close every channel of the
// connection. MaxHeaderBytes is frame_max minus the content header's other
// fields at their largest and a reserve for the adapter's own headers.
// MaxMessageBytes is 0: the body is split into frames.
func (a *Adapter) Limits() broker.Limits {
	fm := a.frameMax()
	if fm <= 0 {
		return broker.Limits{}
	}
	return broker.Limits{MaxHeaderBytes: max(fm-frameOverhead-headerReserve, 0)}
}

// frameMax is the negotiated frame_max of the current connection (or of
// the configuration before Connect); 0 means no limit.
func (a *Adapter) frameMax() int {
	if l := a.live.Load(); l != nil {
		if c := l.sess.current(); c != nil {
			return c.Config.FrameSize
		}
	}
	if a.external != nil {
		return a.external.Config.FrameSize
	}
	switch fs := a.config.FrameSize; {
	case fs == 0:
		return defaultFrameMax
	case fs < 0:
		return 0
	default:
		return min(fs, defaultFrameMax)
	}
}

// checkFrame refuses a publishing whose content header does not fit in one
// frame of frameMax (0: no limit): RabbitMQ would close the connection.
// It covers every publish of the adapter: sends, retry copies, dead
// letters, recounts.
func checkFrame(frameMax int, p *amqp091.Publishing) error {
	if frameMax <= 0 {
		return nil
	}
	n := contentHeaderBytes(p)
	if n+8 > frameMax {
		return fmt.Errorf("%w: a content header of %d bytes (headers table: %d) does not fit in the connection's frame_max of %d",
			broker.ErrTooLarge, n, tableBytes(p.Headers), frameMax)
	}
	return nil
}

// contentHeaderBytes is the size of the content-header frame's payload.
func contentHeaderBytes(p *amqp091.Publishing) int {
	n := 14
	for _, s := range []string{p.ContentType, p.ContentEncoding, p.CorrelationId, p.ReplyTo, p.Expiration,
		p.MessageId, p.Type, p.UserId, p.AppId} {
		if s != "" {
			n += 1 + len(s)
		}
	}
	if len(p.Headers) > 0 {
		n += tableBytes(p.Headers)
	}
	n += 1 + 1 // delivery mode, priority
	if !p.Timestamp.IsZero() {
		n += 8
	}
	return n
}

// tableBytes is the encoded size of an AMQP field table.
func tableBytes(t amqp091.Table) int {
	n := 4
	for k, v := range t {
		n += 1 + len(k) + fieldBytes(v)
	}
	return n
}

func fieldBytes(v any) int {
	switch x := v.(type) {
	case nil:
		return 1
	case bool, int8, uint8:
		return 1 + 1
	case int16, uint16:
		return 1 + 2
	case int32, uint32, float32:
		return 1 + 4
	case int, int64, uint64, float64, time.Time:
		return 1 + 8
	case amqp091.Decimal:
		return 1 + 5
	case string:
		return 1 + 4 + len(x)
	case []byte:
		return 1 + 4 + len(x)
	case []any:
		n := 1 + 4
		for _, e := range x {
			n += fieldBytes(e)
		}
		return n
	case amqp091.Table:
		return 1 + tableBytes(x)
	}
	return 1 + 8
}
