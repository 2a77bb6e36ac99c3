package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// TestDeadLetterHeadersReplaceForgedBookkeeping (issue 26 item 3, the
// kit's part): the bookkeeping headers a producer wrote on a message never
// reach its dead-letter copy as they were: x-group and every x-error-* are
// dropped, x-original-channel, -group, -id and x-redelivered-count are the
// delivery's own. (A guard: the kit already did so before the issue.)
func TestDeadLetterHeadersReplaceForgedBookkeeping(t *testing.T) {
	msg := &broker.Message{Channel: "orders", Group: "billing", ID: "42", Attempt: 2, Headers: map[string]string{
		broker.HeaderGroup: "billing", broker.HeaderRedeliveredCount: "99",
		broker.HeaderOriginalChannel: "admin", broker.HeaderOriginalGroup: "root", broker.HeaderOriginalID: "1",
		broker.HeaderErrorMessage: "forged", broker.HeaderErrorStack: "Zm9yZ2Vk", broker.HeaderErrorRetryable: "false",
		"x-error-anything": "forged", "tenant": "acme",
	}}
	h := broker.DeadLetterHeaders(msg, errors.New("boom"), time.Unix(1700000000, 0))
	want := map[string]string{broker.HeaderOriginalChannel: "orders", broker.HeaderOriginalGroup: "billing",
		broker.HeaderOriginalID: "42", broker.HeaderRedeliveredCount: "1", broker.HeaderErrorMessage: "boom", "tenant": "acme"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	for _, k := range []string{broker.HeaderGroup, broker.HeaderErrorRetryable, "x-error-anything"} {
		if v, ok := h[k]; ok {
			t.Errorf("%s = %q kept", k, v)
		}
	}
}
