package broker

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// DeadLetterPolicy is a channel's resolved dead-letter configuration.
type DeadLetterPolicy struct {
	Enabled bool
	// Queue is the full (prefixed) dead-letter channel name.
	Queue string
	// Exchange is the full (prefixed) AMQP dead-letter exchange name.
	Exchange string
	// RefusalWindow is the least time between a message's first refused
	// dead letter and its drop (0: DefaultRefusalWindow).
	RefusalWindow time.Duration
}

// DefaultRefusalWindow is the default DeadLetterPolicy.RefusalWindow: a
// dead-letter target that is only unavailable for a while (a node
// restarting, a leader election) is not mistaken for one that refuses the
// copy.
const DefaultRefusalWindow = 30 * time.Second

// DeadLetterHeaders builds the headers of a dead-lettered copy: the original
// headers, x-original-channel, x-original-group, x-original-id,
// x-redelivered-count (redeliveries so far) and the x-error-* headers. A
// header named by a *DecodeError cause is moved to x-original-<name>.
func DeadLetterHeaders(msg *Message, cause error, now time.Time) map[string]string {
	eh := ErrorToHeaders(cause, now)
	h := CloneHeaders(msg.Headers, 5+len(eh))
	delete(h, HeaderGroup)
	for k := range h {
		if strings.HasPrefix(k, HeaderErrorPrefix) {
			delete(h, k)
		}
	}
	// A header that could not be decoded would poison the dead-letter
	// consumer too: keep its value under x-original-<name>.
	var de *DecodeError
	if errors.As(cause, &de) && de.Field != "payload" && de.Field != "headers" {
		if v, ok := h[de.Field]; ok {
			delete(h, de.Field)
			h["x-original-"+de.Field] = v
		}
	}
	h[HeaderOriginalChannel] = msg.Channel
	h[HeaderOriginalGroup] = msg.Group
	if msg.ID != "" {
		h[HeaderOriginalID] = msg.ID
	}
	redelivered := msg.Attempt - 1
	if redelivered < 0 {
		redelivered = 0
	}
	h[HeaderRedeliveredCount] = strconv.Itoa(redelivered)
	for k, v := range eh {
		h[k] = v
	}
	return h
}
