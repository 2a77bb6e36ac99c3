package jetstream

import (
	"errors"
	"strings"
	"testing"

	"github.com/microchannels/channels/broker"
)

// A password with an unescaped "#", "/", "?" or "@" is refused without
// being shown; a percent-encoded one is accepted and never displayed.
func TestURLPasswordsNeverShown(t *testing.T) {
	for _, raw := range []string{"nats://u:123#abc@h:4222", "nats://u:12/3@h:4222", "nats://u:1?x@h"} {
		_, display, err := parseURLs(raw)
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Fatalf("%s: display %q, error %v", raw, display, err)
		}
		for _, secret := range []string{"123", "abc", "12/3", "1?x"} {
			if strings.Contains(err.Error(), secret) && strings.Contains(raw, secret) {
				t.Fatalf("%s: the error shows %q: %v", raw, secret, err)
			}
		}
	}
	_, display, err := parseURLs("nats://u:123%23abc@h:4222,tls://v:s%2Fx@k:4223")
	if err != nil || display != "nats://h:4222,tls://k:4223" {
		t.Fatalf("display %q, error %v", display, err)
	}
}
