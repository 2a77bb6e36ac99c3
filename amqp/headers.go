package amqp

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// toTable turns string headers into an AMQP table. x-redelivered-count is
// written as an integer, as @moleculer/channels writes it.
func toTable(h map[string]string) amqp091.Table {
	if len(h) == 0 {
		return nil
	}
	t := make(amqp091.Table, len(h))
	for k, v := range h {
		t[k] = v
	}
	if v, ok := h[broker.HeaderRedeliveredCount]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			t[broker.HeaderRedeliveredCount] = int32(n)
		}
	}
	return t
}

// isBrokerHeader: headers RabbitMQ adds when it dead-letters a message (our
// retry queues do), and this adapter's own bookkeeping; neither is handed to
// handlers as a header nor copied into a republished message.
func isBrokerHeader(k string) bool {
	return k == "x-death" || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") ||
		k == HeaderUnfinished || k == HeaderFinal || k == HeaderDeliveryCount || k == HeaderOwner
}

// fromTable turns an AMQP table into string headers: strings as they are,
// numbers and booleans formatted, byte arrays as text, tables and arrays as
// JSON. Broker bookkeeping headers are left out.
func fromTable(t amqp091.Table) map[string]string {
	if len(t) == 0 {
		return nil
	}
	h := make(map[string]string, len(t))
	for k, v := range t {
		if isBrokerHeader(k) {
			continue
		}
		if s, ok := valueString(v); ok {
			h[k] = s
		}
	}
	return h
}

func valueString(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case int8:
		return strconv.FormatInt(int64(x), 10), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int:
		return strconv.Itoa(x), true
	case uint8:
		return strconv.FormatUint(uint64(x), 10), true
	case uint16:
		return strconv.FormatUint(uint64(x), 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case amqp091.Decimal:
		return fmt.Sprint(x.Value) + "e-" + strconv.Itoa(int(x.Scale)), true
	case time.Time:
		return strconv.FormatInt(x.UnixMilli(), 10), true
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x), true
		}
		return string(b), true
	}
}

// intHeader reads an integer header of any AMQP type (a string too).
func intHeader(t amqp091.Table, k string) int {
	switch x := t[k].(type) {
	case int8:
		return int(x)
	case int16:
		return int(x)
	case int32:
		return int(x)
	case int64:
		return int(x)
	case int:
		return x
	case uint8:
		return int(x)
	case uint16:
		return int(x)
	case uint32:
		return int(x)
	case float64:
		return int(x)
	case float32:
		return int(x)
	case string:
		n, _ := strconv.Atoi(x)
		return n
	case []byte:
		n, _ := strconv.Atoi(string(x))
		return n
	}
	return 0
}

func boolHeader(t amqp091.Table, k string) bool {
	switch x := t[k].(type) {
	case bool:
		return x
	case string:
		b, _ := strconv.ParseBool(x)
		return b
	}
	return intHeader(t, k) != 0
}

// history is what a delivery's headers say about its past in this group.
type history struct {
	// failed runs (x-redelivered-count), when they belong to this group.
	failed int
	// unfinished deliveries (HeaderUnfinished, plus x-delivery-count on a
	// quorum queue).
	unfinished int
	// quorum: the delivery came from a quorum queue (the broker counts).
	quorum bool
	final  bool
	// failure holds the x-error-* headers of the last failed run in this group.
	failure map[string]string
}

// maxCount bounds every count read from a header: a value beyond it (or
// below 0) is clamped, so no header can overflow or disable a limit.
const maxCount = 1 << 16

func clampCount(n int) int { return min(max(n, 0), maxCount) }

// readHistory reads a delivery's past. x-redelivered-count counts the
// failed runs of the group that wrote it: a dead-letter copy (it has
// x-original-group) consumed as a channel of its own starts afresh, unless
// this group retried it already (x-group is ours).
//
// Only what this adapter or RabbitMQ wrote is trusted: x-delivery-count
// only on a redelivery from a quorum queue (RabbitMQ sets it then; on a
// first delivery it is a producer's header), x-channels-unfinished only on
// a copy this group made (x-group or x-channels-group is ours),
// x-channels-final only on a copy this group kept (x-group is ours). Every
// count is clamped to [0, 65536].
func readHistory(t amqp091.Table, group string, quorum, redelivered bool) history {
	var h history
	h.quorum = quorum
	ours := false
	if g, ok := valueString(t[broker.HeaderGroup]); ok && g == group {
		ours = true
	}
	if g, ok := valueString(t[HeaderOwner]); (ok && g == group) || ours {
		h.unfinished = clampCount(intHeader(t, HeaderUnfinished))
	}
	if quorum && redelivered {
		h.unfinished += clampCount(intHeader(t, HeaderDeliveryCount))
	}
	if _, isDead := t[broker.HeaderOriginalGroup]; isDead && !ours {
		return h
	}
	h.failed = clampCount(intHeader(t, broker.HeaderRedeliveredCount))
	h.final = ours && boolHeader(t, HeaderFinal)
	if h.failed > 0 || h.final {
		for k, v := range t {
			if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
				if s, ok := valueString(v); ok {
					if h.failure == nil {
						h.failure = map[string]string{}
					}
					h.failure[k] = s
				}
			}
		}
	}
	return h
}

// copyTable copies the headers of a delivery for a republished copy,
// without the broker's dead-lettering headers and our bookkeeping.
func copyTable(t amqp091.Table, extra int) amqp091.Table {
	out := make(amqp091.Table, len(t)+extra)
	for k, v := range t {
		if isBrokerHeader(k) {
			continue
		}
		out[k] = v
	}
	return out
}

// republishing copies the properties of d for a copy of it. The expiration
// is dropped (the message was delivered in time; a copy waiting for its
// retry must not expire), and so is the user id (RabbitMQ refuses a user id
// that is not the publishing connection's).
func republishing(d *amqp091.Delivery, headers amqp091.Table) amqp091.Publishing {
	mode := d.DeliveryMode
	if mode == 0 {
		mode = amqp091.Transient
	}
	return amqp091.Publishing{Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: mode, Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body}
}
