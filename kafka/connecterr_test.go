package kafka

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// TestConnectErrorKeepsItsCause: a failed Connect wraps the driver's error,
// so errors.Is finds the cause (here a refused connection).
func TestConnectErrorKeepsItsCause(t *testing.T) {
	a, err := New("kafka://user:secret@127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = a.Connect(ctx, broker.Env{})
	if !errors.Is(err, broker.ErrNotConnected) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Connect = %v, want ErrNotConnected wrapping ECONNREFUSED", err)
	}
}
